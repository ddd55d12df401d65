//! The settings as an operator meets them: the binary refuses a key it does not know, naming it,
//! and `check-config` prints what is in force.

use std::process::Command;

fn ocpp_css(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ocpp-css"));
    cmd.args(args).env_remove("RUST_BACKTRACE").env_remove("RUST_LIB_BACKTRACE");
    // Only the variables this test sets: the developer's own OCPP_CSS__ settings stay out.
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("OCPP_CSS")) {
        cmd.env_remove(name);
    }
    for (name, value) in env {
        cmd.env(name, value);
    }
    cmd.output().expect("the server binary runs")
}

#[test]
fn a_misspelt_variable_stops_the_server_before_it_starts_and_names_the_key_meant() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_string_lossy().to_string();
    let out = ocpp_css(
        &["serve"],
        &[("OCPP_CSS__STORAGE__DATA_DIR", &data), ("OCPP_CSS__SERVER__PORT", "0"), ("OCPP_CSS__SERVER__PORTT", "8199")],
    );
    assert!(!out.status.success(), "the server started with a misspelt setting");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown setting `server.portt` (environment variable OCPP_CSS__SERVER__PORTT); did you mean `server.port`?"),
        "{stderr}"
    );
}

#[test]
fn check_config_prints_the_settings_in_force_with_the_redis_password_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    std::fs::write(&file, "[ocpp]\nheartbeat_interval_secs = 120\n").unwrap();
    let file = file.to_string_lossy().to_string();
    let out = ocpp_css(
        &["check-config", "--config", &file],
        &[("OCPP_CSS__CLUSTER__REDIS_URL", "redis://ops:hunter2-secret@127.0.0.1:6379/0")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("heartbeat_interval_secs = 120"), "the file's value: {stdout}");
    assert!(stdout.contains("port = 8180"), "a default: {stdout}");
    assert!(stdout.contains("redis_url = \"redis://ops:***@127.0.0.1:6379/0\""), "{stdout}");
    assert!(!stdout.contains("hunter2-secret"));

    std::fs::write(&file, "[ocpp]\nheartbeat_intervall_secs = 120\n").unwrap();
    let out = ocpp_css(&["check-config", "--config", &file], &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "`ocpp.heartbeat_intervall_secs` (in the --config file); did you mean `ocpp.heartbeat_interval_secs`?"
        ),
        "{stderr}"
    );
}

#[test]
fn logs_redirected_away_from_a_terminal_are_plain_text() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ocpp-css"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("OCPP_CSS") || name == "RUST_LOG") {
        cmd.env_remove(name);
    }
    let mut server = cmd
        .arg("serve")
        .env("OCPP_CSS__STORAGE__DATA_DIR", dir.path())
        .env("OCPP_CSS__SERVER__PORT", "0")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the server starts");
    let stdout = server.stdout.take().expect("piped");
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("text");
        let listening = line.contains("listening");
        lines.push(line);
        if listening {
            break;
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    assert!(lines.iter().any(|l| l.contains("listening")), "{lines:?}");
    assert!(lines.iter().all(|l| !l.contains('\u{1b}')), "ANSI escapes in redirected logs: {lines:?}");
}
