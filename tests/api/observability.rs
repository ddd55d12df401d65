//! What an SRE sees of a node before anything happens, and how its requests are told apart.

use crate::helpers::{series_value, serve_process, spawn_app};
use std::collections::BTreeSet;

/// Every `ocpp_*` metric the shipped dashboards query.
fn dashboard_metrics() -> BTreeSet<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/grafana/dashboards");
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(dir).expect("dashboards") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("dashboard");
        for (i, _) in text.match_indices("ocpp_") {
            let name: String =
                text[i..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .fold(name.clone(), |n, s| n.strip_suffix(s).unwrap_or(&n).to_string());
            names.insert(base);
        }
    }
    names
}

/// A fresh node, a process of its own (the test process's metrics registry is shared by every test):
/// its `/metrics` before any station or request.
fn fresh_node_metrics() -> String {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, _, port) = serve_process(dir.path());
    let metrics = port.map(|port| {
        let url = format!("http://127.0.0.1:{port}/metrics");
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async { reqwest::get(url).await.expect("scrape").text().await.expect("text") })
        })
        .join()
        .expect("scrape thread")
    });
    let _ = server.kill();
    let _ = server.wait();
    metrics.expect("the node logged its port")
}

#[test]
fn a_fresh_node_exports_the_dashboards_metrics_at_zero() {
    let metrics = fresh_node_metrics();
    let present: BTreeSet<&str> =
        metrics.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).collect();
    // Created on first use: a series per action (of ~100 possible, each histogram ~20 lines) would
    // be noise; and what only a cluster node has.
    let later = [
        "ocpp_messages_total",
        "ocpp_call_duration_seconds",
        "ocpp_command_duration_seconds",
        "ocpp_redis_up",
        "ocpp_cluster_redis_up",
        "ocpp_cluster_routed_commands_total",
        "ocpp_webhook_delivery_duration_seconds",
    ];
    let missing: Vec<String> = dashboard_metrics()
        .into_iter()
        .filter(|name| !later.contains(&name.as_str()))
        .filter(|name| !present.iter().any(|p| p.starts_with(name.as_str())))
        .collect();
    assert!(missing.is_empty(), "not exported by a fresh node: {missing:?}");
    // The node list of the dashboards is `label_values(ocpp_connections, node)`.
    assert!(
        metrics.lines().any(|l| l.starts_with("ocpp_connections{") && l.contains("protocol=\"ocpp1.6\"")),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_caller_s_request_id_is_kept_a_bad_one_replaced_and_probes_are_not_counted_as_api_requests() {
    let app = spawn_app().await;
    let get = |id: Option<String>| {
        let mut req = app.http.get(app.api("/openapi.json"));
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        async move {
            let res = req.send().await.expect("request");
            res.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_string)
        }
    };
    assert_eq!(get(Some("lb-7f3a.42:1".into())).await.as_deref(), Some("lb-7f3a.42:1"));
    for bad in ["has space".to_string(), "x".repeat(65), "<script>".to_string()] {
        let given = get(Some(bad.clone())).await.expect("an id");
        assert!(given != bad && given.len() == 32 && given.bytes().all(|b| b.is_ascii_hexdigit()), "{given}");
    }
    assert!(get(None).await.is_some_and(|id| id.len() == 32));

    let api = |metrics: &str| {
        ["2xx", "3xx", "4xx", "5xx"]
            .iter()
            .map(|c| series_value(metrics, "ocpp_api_requests_total", &[("status", c)]))
            .sum::<f64>()
    };
    let before = api(&app.metrics().await);
    for path in ["/healthz", "/readyz", "/metrics"] {
        app.http.get(app.url(path)).send().await.expect("probe");
    }
    // The scrape that reads the counter is not counted either; other tests' requests in this
    // process may be, so only "no more than before plus theirs" can be said of the total: the
    // probes alone must not move it by three.
    let after = api(&app.metrics().await);
    assert!(after - before < 3.0, "probes counted as API requests: {before} -> {after}");
}

#[tokio::test]
async fn api_latency_is_recorded_by_route_template_never_by_path() {
    let app = spawn_app().await;
    let t = app.tenant("latency").await;
    let count = |metrics: &str, labels: &[(&str, &str)]| {
        series_value(metrics, "ocpp_api_request_duration_seconds_count", labels)
    };
    let route = [("route", "/api/v1/stations/{id}"), ("method", "GET"), ("status", "4xx")];
    let unmatched = [("route", "unmatched"), ("method", "other"), ("status", "4xx")];
    let before = app.metrics().await;
    for id in ["NO-SUCH-1", "NO-SUCH-2", "NO-SUCH-3"] {
        let (status, _) = app.get(&format!("/stations/{id}"), &t.token).await;
        assert_eq!(status, reqwest::StatusCode::NOT_FOUND);
    }
    let odd = reqwest::Method::from_bytes(b"BREW").unwrap();
    app.http.request(odd, app.url("/no/such/path/42")).send().await.expect("answered");
    let after = app.metrics().await;
    assert_eq!(count(&after, &route) - count(&before, &route), 3.0, "three requests under one template");
    assert!(count(&after, &unmatched) - count(&before, &unmatched) >= 1.0);
    assert!(!after.contains("NO-SUCH-1") && !after.contains("/no/such/path"), "a path in a label");
}
