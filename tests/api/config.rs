//! The settings as an operator meets them: the binary refuses a key it does not know, naming it,
//! and `check-config` prints what is in force.

use crate::helpers::{serve_process, server_command};

fn ocpp_css(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = server_command();
    cmd.args(args);
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
    let dir = tempfile::tempdir().unwrap();
    let (mut server, lines, _) = serve_process(dir.path());
    let _ = server.kill();
    let _ = server.wait();
    assert!(lines.iter().any(|l| l.contains("listening")), "{lines:?}");
    assert!(lines.iter().all(|l| !l.contains('\u{1b}')), "ANSI escapes in redirected logs: {lines:?}");
}
