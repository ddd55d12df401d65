//! Counting what happened to an attack: outcomes by label (`close_1009`, `http_429`, `reset`, …),
//! and the spread (count, min, mean, max) of a quantity such as the bytes sent before a cut.

use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Longest label kept from text the server chose (a CALLERROR code, a status).
const MAX_LABEL_PART: usize = 40;

/// Counts by label.
#[derive(Debug, Default)]
pub struct Tally(Mutex<BTreeMap<String, u64>>);

impl Tally {
    pub fn add(&self, label: &str) {
        self.add_n(label, 1);
    }

    pub fn add_n(&self, label: &str, n: u64) {
        if n == 0 {
            return;
        }
        *self.0.lock().expect("tally lock").entry(label.to_string()).or_default() += n;
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().expect("tally lock").clone()
    }
}

/// The `n` largest counts, largest first (ties by label), as `label count, label count`.
pub fn top(m: &BTreeMap<String, u64>, n: usize) -> String {
    let mut v: Vec<(&String, &u64)> = m.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut parts: Vec<String> = v.iter().take(n).map(|(k, c)| format!("{k} {c}")).collect();
    if v.len() > n {
        parts.push(format!("+{} more", v.len() - n));
    }
    parts.join(", ")
}

/// Text from the server made fit for a label: letters, digits, `_`, `-` and `.` kept, anything else
/// `_`, at most 40 characters; `none` when empty.
pub fn clean(part: &str) -> String {
    let s: String = part
        .chars()
        .take(MAX_LABEL_PART)
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') { c } else { '_' })
        .collect();
    if s.is_empty() {
        "none".into()
    } else {
        s
    }
}

pub fn http_label(status: u16) -> String {
    format!("http_{status}")
}

pub fn callerror_label(code: &str) -> String {
    format!("callerror_{}", clean(code))
}

/// `datatransfer_Accepted`, `datatransfer_Rejected`, … from a DataTransfer CALLRESULT payload.
pub fn datatransfer_label(answer: &Value) -> String {
    match answer.get("status").and_then(Value::as_str) {
        Some(s) => format!("datatransfer_{}", clean(s)),
        None => "datatransfer_no_status".into(),
    }
}

/// The label of an I/O failure on an attack socket.
pub fn io_label(e: &std::io::Error) -> &'static str {
    use std::io::ErrorKind as K;
    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
        return "harness_emfile";
    }
    match e.kind() {
        K::ConnectionReset | K::BrokenPipe | K::ConnectionAborted => "reset",
        K::UnexpectedEof | K::WriteZero => "eof",
        K::TimedOut => "timeout",
        K::ConnectionRefused => "refused",
        K::AddrNotAvailable | K::AddrInUse => "no_port",
        _ => "io_error",
    }
}

/// The label of a failed HTTP request made with reqwest.
pub fn reqwest_label(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect_error".into()
    } else {
        "request_error".into()
    }
}

/// Count, min, mean and max of a quantity.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Spread {
    pub n: u64,
    pub min: f64,
    pub mean: f64,
    pub max: f64,
}

/// Collects a [`Spread`].
#[derive(Debug, Default)]
pub struct SpreadAcc(Mutex<Option<(u64, f64, f64, f64)>>);

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl SpreadAcc {
    pub fn add(&self, x: f64) {
        let mut g = self.0.lock().expect("spread lock");
        *g = Some(match *g {
            None => (1, x, x, x),
            Some((n, sum, min, max)) => (n + 1, sum + x, min.min(x), max.max(x)),
        });
    }

    /// `None` before the first value.
    pub fn get(&self) -> Option<Spread> {
        let g = self.0.lock().expect("spread lock");
        g.map(|(n, sum, min, max)| Spread { n, min: round3(min), mean: round3(sum / n as f64), max: round3(max) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tally_counts_by_label() {
        let t = Tally::default();
        t.add("close_1009");
        t.add("close_1009");
        t.add("reset");
        t.add_n("http_429", 5);
        t.add_n("never", 0);
        let m = t.snapshot();
        assert_eq!(m.len(), 3, "{m:?}");
        assert_eq!((m["close_1009"], m["reset"], m["http_429"]), (2, 1, 5));
        assert_eq!(top(&m, 2), "http_429 5, close_1009 2, +1 more");
        assert_eq!(top(&m, 5), "http_429 5, close_1009 2, reset 1");
        assert_eq!(top(&BTreeMap::new(), 3), "");
    }

    #[test]
    fn labels_from_server_text_are_tamed() {
        assert_eq!(callerror_label("GenericError"), "callerror_GenericError");
        assert_eq!(callerror_label("a b\n\"c\""), "callerror_a_b__c_");
        assert_eq!(callerror_label(""), "callerror_none");
        assert_eq!(callerror_label(&"x".repeat(500)).len(), "callerror_".len() + 40);
        assert_eq!(datatransfer_label(&json!({"status": "Rejected"})), "datatransfer_Rejected");
        assert_eq!(
            datatransfer_label(&json!({"status": "UnknownVendorId", "data": "x"})),
            "datatransfer_UnknownVendorId"
        );
        assert_eq!(datatransfer_label(&json!({})), "datatransfer_no_status");
        assert_eq!(datatransfer_label(&json!({"status": 3})), "datatransfer_no_status");
        assert_eq!(http_label(429), "http_429");
    }

    #[test]
    fn io_failures_are_labelled() {
        use std::io::{Error, ErrorKind};
        assert_eq!(io_label(&Error::from(ErrorKind::ConnectionReset)), "reset");
        assert_eq!(io_label(&Error::from(ErrorKind::BrokenPipe)), "reset");
        assert_eq!(io_label(&Error::from(ErrorKind::UnexpectedEof)), "eof");
        assert_eq!(io_label(&Error::from(ErrorKind::ConnectionRefused)), "refused");
        assert_eq!(io_label(&Error::from_raw_os_error(libc::EMFILE)), "harness_emfile");
        assert_eq!(io_label(&Error::from_raw_os_error(libc::EADDRNOTAVAIL)), "no_port");
        assert_eq!(io_label(&Error::other("x")), "io_error");
    }

    #[test]
    fn spread_keeps_count_min_mean_max() {
        let s = SpreadAcc::default();
        assert_eq!(s.get(), None);
        for x in [4.0, 1.0, 7.0] {
            s.add(x);
        }
        assert_eq!(s.get(), Some(Spread { n: 3, min: 1.0, mean: 4.0, max: 7.0 }));
        s.add(1.0 / 3.0);
        assert_eq!(s.get().unwrap().min, 0.333);
    }
}
