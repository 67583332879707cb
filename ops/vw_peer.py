"""Vowpal Wabbit as a peer of the ranker in the ranking benchmark (tests/benches/ranking.rs).

A contextual bandit over the units (`--cb_explore_adf --squarecb -q sa`): the shared
features are the words of a signal's shape text, each action is one unit. The benchmark drives
it over stdin and stdout, one JSON object a line:

  {"choose": "shape text", "units": 4}           -> {"unit": u, "probability": p}
  {"learn": "shape text", "units": 4, "unit": u, "reward": r, "probability": p}  -> {}

Run by the benchmark with the project's reference venv (ops/reference-venv).
"""

import json
import random
import re
import sys

import vowpalwabbit

WORD = re.compile(r"[a-z0-9]+")


def examples(text, units, label=None):
    words = " ".join(WORD.findall(text.lower())) or "empty"
    lines = [f"shared |s {words}"]
    for unit in range(units):
        prefix = ""
        if label is not None and label[0] == unit:
            # VW minimises cost: the cost of a unit is the reward it did not earn.
            prefix = f"0:{1.0 - label[1]:.6f}:{label[2]:.6f} "
        lines.append(f"{prefix}|a unit{unit}")
    return lines


def main():
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    rng = random.Random(seed)
    vw = vowpalwabbit.Workspace(
        f"--cb_explore_adf --squarecb -q sa --quiet --random_seed {seed}"
    )
    for line in sys.stdin:
        request = json.loads(line)
        if "choose" in request:
            pmf = vw.predict(examples(request["choose"], request["units"]))
            draw, total, unit = rng.random(), 0.0, len(pmf) - 1
            for u, p in enumerate(pmf):
                total += p
                if draw < total:
                    unit = u
                    break
            answer = {"unit": unit, "probability": pmf[unit]}
        else:
            label = (request["unit"], request["reward"], request["probability"])
            vw.learn(examples(request["learn"], request["units"], label))
            answer = {}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
