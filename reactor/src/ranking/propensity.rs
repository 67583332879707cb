//! The probability that sampling the posteriors puts a unit among the first `k`: what is logged
//! with each execution as its propensity, so that another ranker can later be evaluated on the
//! logs.
//!
//! Each unit's Beta posterior is approximated by a normal of the same mean and variance, and
//! P(unit i in top k) = E over x ~ N_i of P(fewer than k other units draw above x): the
//! expectation is a midpoint rule over equal-probability slices of N_i, the inner probability a
//! Poisson-binomial over the other units. One pass gives every k at once. Deterministic; an
//! equally precise Monte Carlo estimate would take thousands of draws.

use std::sync::OnceLock;

/// Equal-probability slices of each unit's distribution.
const SLICES: usize = 32;

/// Mean and standard deviation of a Beta(a, b).
pub fn beta_moments(a: f64, b: f64) -> (f64, f64) {
    let n = a + b;
    let mean = a / n;
    let var = a * b / (n * n * (n + 1.0));
    (mean, var.sqrt().max(1e-6))
}

fn normal_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

/// Φ(x) to within 7.5e-8 (Abramowitz and Stegun 26.2.17): one `exp` where `erfc` costs several
/// times more, and the matrix below takes n·(n-1)·SLICES of them at every ranking after the
/// evidence moved. Beyond 8 standard deviations (Φ(-8) < 1e-15) it is 0 or 1 without the `exp`,
/// which would only underflow: with sharply concentrated posteriors most comparisons are there.
fn normal_cdf_fast(x: f64) -> f64 {
    const P: f64 = 0.231_641_9;
    const FAR: f64 = 8.0;
    if x >= FAR {
        return 1.0;
    }
    if x <= -FAR {
        return 0.0;
    }
    const B: [f64; 5] = [
        0.319_381_530,
        -0.356_563_782,
        1.781_477_937,
        -1.821_255_978,
        1.330_274_429,
    ];
    let z = x.abs();
    let t = 1.0 / (1.0 + P * z);
    let poly = t * (B[0] + t * (B[1] + t * (B[2] + t * (B[3] + t * B[4]))));
    let density = (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let upper = density * poly;
    if x >= 0.0 { 1.0 - upper } else { upper }
}

/// The standard normal quantiles at the middle of each slice, (g + 0.5) / SLICES.
fn quantiles() -> &'static [f64; SLICES] {
    static Q: OnceLock<[f64; SLICES]> = OnceLock::new();
    Q.get_or_init(|| {
        let mut q = [0.0; SLICES];
        for (g, z) in q.iter_mut().enumerate() {
            let p = (g as f64 + 0.5) / SLICES as f64;
            // Newton on Φ(z) = p, from 0; Φ is smooth and monotone, so this converges fast.
            let mut x = 0.0f64;
            for _ in 0..50 {
                let density = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
                let step = (normal_cdf(x) - p) / density.max(1e-300);
                x -= step;
                if step.abs() < 1e-12 {
                    break;
                }
            }
            *z = x;
        }
        q
    })
}

/// `m[k - 1][i]` = P(unit i is among the first k), for k = 1..=n, where unit i draws from
/// N(mean_i, sd_i²) and units are ordered by their draws, highest first.
pub fn matrix(moments: &[(f64, f64)]) -> Vec<Vec<f64>> {
    let n = moments.len();
    let mut m = vec![vec![0.0; n]; n];
    let mut dp = vec![0.0; n + 1];
    for (i, &(mean, sd)) in moments.iter().enumerate() {
        for &z in quantiles() {
            let x = mean + sd * z;
            // dp[j] = P(exactly j of the other units draw above x)
            dp.iter_mut().for_each(|p| *p = 0.0);
            dp[0] = 1.0;
            let mut others = 0;
            for (j, &(mj, sj)) in moments.iter().enumerate() {
                if j == i {
                    continue;
                }
                let above = 1.0 - normal_cdf_fast((x - mj) / sj);
                others += 1;
                for c in (1..=others).rev() {
                    dp[c] = dp[c] * (1.0 - above) + dp[c - 1] * above;
                }
                dp[0] *= 1.0 - above;
            }
            let mut fewer = 0.0;
            for k in 1..=n {
                fewer += dp[k - 1];
                m[k - 1][i] += fewer / SLICES as f64;
            }
        }
    }
    for row in &mut m {
        row.iter_mut().for_each(|p| *p = p.clamp(0.0, 1.0));
    }
    m
}

/// P(unit i is among the first `k`) for each unit; see [`matrix`].
#[cfg(test)]
fn top_k(moments: &[(f64, f64)], k: usize) -> Vec<f64> {
    match k {
        0 => vec![0.0; moments.len()],
        k if k >= moments.len() => vec![1.0; moments.len()],
        k => matrix(moments).swap_remove(k - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_normal_cdf_matches_erfc() {
        // Out to 40 standard deviations: past 8 it answers 0 or 1 without the polynomial.
        for i in -4000..=4000 {
            let x = f64::from(i) / 100.0;
            let error = (normal_cdf_fast(x) - normal_cdf(x)).abs();
            assert!(error < 1e-7, "Φ({x}): {error}");
        }
    }

    #[test]
    fn equal_units_share_evenly() {
        let m = matrix(&[(0.5, 0.1); 4]);
        for (k, row) in m.iter().enumerate() {
            for x in row {
                assert!((x - (k + 1) as f64 / 4.0).abs() < 0.01, "{m:?}");
            }
        }
    }

    #[test]
    fn a_clearly_better_unit_is_nearly_always_first() {
        let p = top_k(&[(0.9, 0.02), (0.5, 0.02), (0.4, 0.02)], 1);
        assert!(p[0] > 0.999 && p[1] < 0.001, "{p:?}");
        let sum: f64 = p.iter().sum();
        assert!((sum - 1.0).abs() < 0.01);
    }

    #[test]
    fn matches_a_monte_carlo_estimate() {
        use rand::SeedableRng;
        use rand_distr::{Distribution, Normal};
        let moments = [(0.7, 0.1), (0.6, 0.15), (0.65, 0.05), (0.3, 0.2)];
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let draws = 200_000;
        let mut first = [0usize; 4];
        let mut top2 = [0usize; 4];
        for _ in 0..draws {
            let mut x: Vec<(f64, usize)> = moments
                .iter()
                .enumerate()
                .map(|(i, &(m, s))| (Normal::new(m, s).expect("normal").sample(&mut rng), i))
                .collect();
            x.sort_by(|a, b| b.0.total_cmp(&a.0));
            first[x[0].1] += 1;
            top2[x[0].1] += 1;
            top2[x[1].1] += 1;
        }
        let p1 = top_k(&moments, 1);
        let p2 = top_k(&moments, 2);
        for i in 0..4 {
            assert!(
                (p1[i] - first[i] as f64 / draws as f64).abs() < 0.01,
                "{p1:?} {first:?}"
            );
            assert!(
                (p2[i] - top2[i] as f64 / draws as f64).abs() < 0.01,
                "{p2:?} {top2:?}"
            );
        }
    }
}
