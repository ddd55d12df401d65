//! Which stations take part: their ids, passwords and URLs.

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

/// One station's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StationCred {
    pub id: String,
    /// HTTP Basic password; `None` connects without an Authorization header.
    pub password: Option<String>,
}

/// Generated station ids: `{prefix}{index:06}`, index from 1.
pub fn station_ids(prefix: &str, count: usize) -> Vec<String> {
    (1..=count).map(|i| format!("{prefix}{i:06}")).collect()
}

/// Generated station ids of the 0-based indices `range`: `{prefix}{index + 1:06}` (a shard's slice).
pub fn station_ids_in(prefix: &str, range: std::ops::Range<u64>) -> Vec<String> {
    range.map(|i| format!("{prefix}{:06}", i + 1)).collect()
}

/// The template's URL for one station: `{id}` and `{tenant}` replaced.
pub fn expand_template(template: &str, tenant: &str, id: &str) -> String {
    template.replace("{tenant}", tenant).replace("{id}", id)
}

/// Checks the template before anything connects.
pub fn check_template(template: &str) -> Result<()> {
    if !template.contains("{id}") {
        bail!("--url-template {template:?} has no {{id}}: OCPP-J puts the station id in the URL");
    }
    if !template.starts_with("ws://") && !template.starts_with("wss://") {
        bail!("--url-template {template:?} must start with ws:// or wss://");
    }
    Ok(())
}

/// The station URL template of an ocpp-css server, from its API base URL
/// (`http://host:port/api/v1` → `ws://host:port/ocpp/{tenant}/{id}`).
pub fn template_from_api(api: &str) -> Result<String> {
    let url = reqwest::Url::parse(api).with_context(|| format!("--provision-api {api:?}"))?;
    let scheme = match url.scheme() {
        "http" => "ws",
        "https" => "wss",
        other => bail!("--provision-api {api:?}: scheme {other} is not http"),
    };
    let host = url.host().ok_or_else(|| anyhow!("--provision-api {api:?} has no host"))?;
    let port = url.port_or_known_default().ok_or_else(|| anyhow!("--provision-api {api:?} has no port"))?;
    Ok(format!("{scheme}://{host}:{port}/ocpp/{{tenant}}/{{id}}"))
}

#[derive(Deserialize)]
struct JsonCred {
    id: Option<String>,
    username: Option<String>,
    station_id: Option<String>,
    password: Option<String>,
}

/// Parses a credentials file: one station a line, either JSON (`{"id": …, "password": …}`; `username`
/// is taken for `id`, so the answers of ocpp-css `POST /stations` can be used as they are) or CSV
/// `id,password` (everything after the first comma is the password). Blank lines, `#` comments and a
/// CSV header line `id,password` are skipped; an empty password means none.
pub fn parse_credentials(text: &str) -> Result<Vec<StationCred>> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let lineno = n + 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let cred = if line.starts_with('{') {
            let c: JsonCred = serde_json::from_str(line).with_context(|| format!("line {lineno}: bad JSON"))?;
            StationCred { id: c.id.or(c.username).or(c.station_id).unwrap_or_default(), password: c.password }
        } else {
            let (id, password) = line.split_once(',').map(|(i, p)| (i.trim(), Some(p.trim()))).unwrap_or((line, None));
            if out.is_empty() && id.eq_ignore_ascii_case("id") {
                continue; // header
            }
            StationCred { id: id.to_string(), password: password.map(str::to_string) }
        };
        if cred.id.is_empty() {
            bail!("line {lineno}: empty station id");
        }
        out.push(StationCred { password: cred.password.filter(|p| !p.is_empty()), ..cred });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_and_zero_padded_from_one() {
        assert_eq!(station_ids("BENCH", 3), vec!["BENCH000001", "BENCH000002", "BENCH000003"]);
        assert_eq!(station_ids("X", 1_000_000)[999_999], "X1000000");
        assert!(station_ids("X", 0).is_empty());
        assert_eq!(station_ids_in("B", 0..3), station_ids("B", 3));
        assert_eq!(station_ids_in("B", 5..7), vec!["B000006", "B000007"]);
    }

    #[test]
    fn template_expansion_replaces_id_and_tenant_everywhere() {
        assert_eq!(expand_template("ws://h:8180/ocpp/{tenant}/{id}", "acme", "CP7"), "ws://h:8180/ocpp/acme/CP7");
        assert_eq!(expand_template("ws://h/{id}?x={id}", "t", "A"), "ws://h/A?x=A");
        assert_eq!(expand_template("ws://h/fixed/{id}", "t", "A"), "ws://h/fixed/A");
    }

    #[test]
    fn templates_are_checked() {
        assert!(check_template("ws://h/{id}").is_ok());
        assert!(check_template("ws://h/station").is_err());
        assert!(check_template("wss://h/{id}").is_ok());
        assert!(check_template("http://h/{id}").is_err());
    }

    #[test]
    fn api_url_gives_the_ocpp_template() {
        assert_eq!(
            template_from_api("http://127.0.0.1:8180/api/v1").unwrap(),
            "ws://127.0.0.1:8180/ocpp/{tenant}/{id}"
        );
        assert_eq!(template_from_api("http://localhost/api/v1/").unwrap(), "ws://localhost:80/ocpp/{tenant}/{id}");
        assert_eq!(template_from_api("http://[::1]:9000/api/v1").unwrap(), "ws://[::1]:9000/ocpp/{tenant}/{id}");
        assert!(template_from_api("ftp://h/api").is_err());
    }

    #[test]
    fn parses_csv_with_header_comments_and_commas_in_passwords() {
        let text = "id,password\n# a comment\n\nCP1, secret-1 \nCP2,pa,ss\nCP3\nCP4,\n";
        let got = parse_credentials(text).unwrap();
        assert_eq!(
            got,
            vec![
                StationCred { id: "CP1".into(), password: Some("secret-1".into()) },
                StationCred { id: "CP2".into(), password: Some("pa,ss".into()) },
                StationCred { id: "CP3".into(), password: None },
                StationCred { id: "CP4".into(), password: None },
            ]
        );
    }

    #[test]
    fn parses_json_lines_including_api_answers() {
        let text = concat!(
            "{\"id\": \"A\", \"password\": \"p1\"}\n",
            "{\"id\":\"B\",\"ocpp_url\":\"ws://h/ocpp/t/B\",\"username\":\"B\",\"password\":\"p2\",\"registration\":\"Accepted\"}\n",
            "{\"username\": \"C\"}\n",
        );
        let got = parse_credentials(text).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], StationCred { id: "A".into(), password: Some("p1".into()) });
        assert_eq!(got[1], StationCred { id: "B".into(), password: Some("p2".into()) });
        assert_eq!(got[2], StationCred { id: "C".into(), password: None });
    }

    #[test]
    fn rejects_malformed_lines() {
        let err = parse_credentials("A,x\n{\"password\":\"p\"}\n").unwrap_err();
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
        assert!(parse_credentials(",pw\n").is_err());
    }
}
