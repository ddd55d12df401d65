//! ocpp-bench: the load harness for OCPP-J 1.6 central systems. Its scenarios (ramp, hold, steady
//! rates, open-loop latency) are the subject of their own issue; until then it only says so.

fn main() {
    eprintln!("ocpp-bench: no scenarios yet; to run one charging session against a server, use `cargo run --example charge_session`");
    std::process::exit(2);
}
