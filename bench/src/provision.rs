//! Provisioning on an ocpp-css server through its REST API: account, sign-in, id tag, stations.

use crate::cli::TargetArgs;
use crate::stations::{self, StationCred};
use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use reqwest::{Client, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

pub struct Plan<'a> {
    /// API base, e.g. `http://127.0.0.1:8180/api/v1`.
    pub api: &'a str,
    pub slug: &'a str,
    pub email: &'a str,
    pub account_password: &'a str,
    pub id_tag: &'a str,
    /// The password of every station created; None: the server generates one per station (ocpp-css
    /// then checks it with a fast keyed hash instead of argon2) and the answers carry them.
    pub station_password: Option<&'a str>,
    pub station_ids: &'a [String],
}

/// Stations created in parallel one by one (a chosen password costs the server an argon2 run each).
const PARALLEL_CREATES: usize = 4;
/// Stations per `POST /stations/bulk` request (the endpoint takes at most 1000).
pub const BULK_CHUNK: usize = 1000;
/// Bulk requests in flight at once.
const PARALLEL_BULK: usize = 3;

async fn body_text(r: reqwest::Response) -> String {
    r.text().await.unwrap_or_default()
}

/// What provisioning leaves behind.
#[derive(Debug, Clone)]
pub struct Provisioned {
    /// The account's slug (the one asked for, unless the account existed with another).
    pub slug: String,
    /// A bearer token of the account.
    pub token: String,
    /// The passwords the server generated for the stations this run created, by station id.
    pub generated: HashMap<String, String>,
}

/// Who creates the account when it does not exist yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignUp {
    /// This process does (an unsharded run, shard 1).
    IfMissing,
    /// Another process does (shard 1): wait for it, signing in again after 1, 2, 4 … s for up to a
    /// minute.
    WaitForIt,
}

/// How long a shard other than the first waits for the account to exist.
const ACCOUNT_WAIT: Duration = Duration::from_secs(60);

async fn sign_in(client: &Client, api: &str, plan: &Plan<'_>) -> Result<reqwest::Response> {
    client
        .post(format!("{api}/sessions"))
        .json(&json!({"email": plan.email, "password": plan.account_password}))
        .send()
        .await
        .with_context(|| format!("POST {api}/sessions"))
}

/// Makes sure the account, its Accepted id tag and the stations exist; returns the account's slug
/// and a token. Stations that exist already (409) are assumed to have `station_password`; with
/// none given, their passwords are not known (see [`Provisioned::generated`]).
pub async fn provision(plan: &Plan<'_>) -> Result<Provisioned> {
    provision_with(plan, SignUp::IfMissing).await
}

/// [`provision`], creating the account only if `sign_up` says so. It signs in first and signs up
/// only when that fails: servers limit sign-ups per address (ocpp-css: 5 an hour), so a run against
/// an existing account must not spend one.
pub async fn provision_with(plan: &Plan<'_>, sign_up: SignUp) -> Result<Provisioned> {
    let api = plan.api.trim_end_matches('/');
    let client = Client::builder().timeout(Duration::from_secs(60)).build()?;

    let mut account = "exists";
    let mut r = sign_in(&client, api, plan).await?;
    if r.status() == StatusCode::UNAUTHORIZED {
        match sign_up {
            SignUp::IfMissing => {
                let created = client
                    .post(format!("{api}/accounts"))
                    .json(&json!({"email": plan.email, "password": plan.account_password,
                                  "name": format!("ocpp-bench {}", plan.slug), "slug": plan.slug}))
                    .send()
                    .await
                    .with_context(|| format!("POST {api}/accounts"))?;
                account = match created.status() {
                    StatusCode::CREATED => "created",
                    StatusCode::CONFLICT => "exists",
                    s => bail!("POST {api}/accounts answered {s}: {}", body_text(created).await),
                };
                r = sign_in(&client, api, plan).await?;
            }
            SignUp::WaitForIt => {
                // Each failed sign-in counts against the server's limit per address (ocpp-css: 20 in
                // 15 min), so the tries back off: 1, 2, 4, 8, 16 s, then to the minute's end.
                let deadline = tokio::time::Instant::now() + ACCOUNT_WAIT;
                eprintln!("waiting for the account {} (shard 1 creates it)", plan.email);
                let mut pause = Duration::from_secs(1);
                while r.status() == StatusCode::UNAUTHORIZED && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(pause.min(deadline - tokio::time::Instant::now())).await;
                    pause *= 2;
                    r = sign_in(&client, api, plan).await?;
                }
                account = "created by shard 1";
            }
        }
    }
    if !r.status().is_success() {
        let s = r.status();
        let hint = match sign_up {
            SignUp::WaitForIt => " (only shard 1 creates the account: start it too, or create the account first)",
            SignUp::IfMissing => "",
        };
        bail!(
            "signing in as {} answered {s}: {}{hint} (if the account exists with another password, or slug {:?} \
             belongs to another account, pass --email/--account-password/--tenant)",
            plan.email,
            body_text(r).await,
            plan.slug
        );
    }
    let session: Value = r.json().await.context("sign-in answer")?;
    let token = session["token"].as_str().ok_or_else(|| anyhow!("sign-in answer has no token: {session}"))?.to_string();
    let slug = session["account"]["slug"].as_str().unwrap_or(plan.slug).to_string();
    if slug != plan.slug {
        eprintln!("note: account {} has slug {slug:?}, not {:?}; using {slug:?}", plan.email, plan.slug);
    }

    let r = client
        .put(format!("{api}/id-tags/{}", plan.id_tag))
        .bearer_auth(&token)
        .json(&json!({"status": "Accepted"}))
        .send()
        .await
        .context("PUT id tag")?;
    if !r.status().is_success() {
        eprintln!(
            "note: registering id tag {} answered {}; StartTransaction may be answered Invalid",
            plan.id_tag,
            r.status()
        );
    }

    let (created, existing, how, generated) = create_stations(&client, api, &token, plan).await?;
    eprintln!(
        "provisioned: account {} ({account}), id tag {}, {} stations ({created} created, {existing} existing; {how})",
        plan.email,
        plan.id_tag,
        plan.station_ids.len(),
    );
    Ok(Provisioned { slug, token, generated })
}

/// Signs in to the account API; the bearer token.
pub async fn token_of(api: &str, email: &str, password: &str) -> Result<String> {
    let api = api.trim_end_matches('/');
    let client = Client::builder().timeout(Duration::from_secs(60)).build()?;
    let r = client
        .post(format!("{api}/sessions"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .with_context(|| format!("POST {api}/sessions"))?;
    if !r.status().is_success() {
        let s = r.status();
        bail!("signing in as {email} answered {s}: {}", body_text(r).await);
    }
    let session: Value = r.json().await.context("sign-in answer")?;
    session["token"].as_str().map(str::to_string).ok_or_else(|| anyhow!("sign-in answer has no token: {session}"))
}

/// One station to create: with `password`, or without one for the server to generate.
fn station_body(id: &str, password: Option<&str>) -> Value {
    match password {
        Some(p) => json!({"id": id, "password": p}),
        None => json!({"id": id}),
    }
}

/// The body of one `POST /stations/bulk` request (see [`station_body`]).
pub fn bulk_body(ids: &[String], password: Option<&str>) -> Value {
    let stations: Vec<Value> = ids.iter().map(|id| station_body(id, password)).collect();
    json!({ "stations": stations })
}

#[derive(Debug, Deserialize, PartialEq)]
pub struct BulkAnswer {
    pub created: u64,
    pub existing: u64,
    /// Passwords the server generated, for the stations created without one.
    #[serde(default)]
    pub generated: Vec<GeneratedPassword>,
}

#[derive(Debug, Deserialize, PartialEq)]
pub struct GeneratedPassword {
    pub id: String,
    pub password: String,
}

/// What one bulk request gave: counts, or "the server has no bulk endpoint".
enum Bulk {
    Done(BulkAnswer),
    Unsupported,
}

async fn post_bulk(client: &Client, api: &str, token: &str, ids: &[String], password: Option<&str>) -> Result<Bulk> {
    let r = client
        .post(format!("{api}/stations/bulk"))
        .bearer_auth(token)
        .json(&bulk_body(ids, password))
        .send()
        .await
        .with_context(|| format!("POST {api}/stations/bulk"))?;
    match r.status() {
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => Ok(Bulk::Unsupported),
        s if s.is_success() => {
            let answer: BulkAnswer = r.json().await.context("POST /stations/bulk answer")?;
            Ok(Bulk::Done(answer))
        }
        s => bail!(
            "POST {api}/stations/bulk ({} stations from {}) answered {s}: {}",
            ids.len(),
            ids[0],
            body_text(r).await
        ),
    }
}

/// Prints provisioning progress for large fleets, about every tenth.
fn progress(done: usize, total: usize, step: usize) {
    if total >= 10 * step && done % (total / 10).max(step) < step {
        eprintln!("provisioning: {done}/{total} stations");
    }
}

/// Creates the stations: in bulk when the server offers `POST /stations/bulk`, else one by one.
/// Returns (created, existing, method, generated passwords by id).
async fn create_stations(
    client: &Client,
    api: &str,
    token: &str,
    plan: &Plan<'_>,
) -> Result<(u64, u64, &'static str, HashMap<String, String>)> {
    let ids = plan.station_ids;
    let Some(first) = ids.chunks(BULK_CHUNK).next() else {
        return Ok((0, 0, "none asked", HashMap::new()));
    };
    let mut generated = HashMap::new();
    if let Bulk::Done(a) = post_bulk(client, api, token, first, plan.station_password).await? {
        let (mut created, mut existing) = (a.created, a.existing);
        generated.extend(a.generated.into_iter().map(|g| (g.id, g.password)));
        let mut done = first.len();
        let mut rest = futures_util::stream::iter(ids.chunks(BULK_CHUNK).skip(1))
            .map(|chunk| async move {
                match post_bulk(client, api, token, chunk, plan.station_password).await? {
                    Bulk::Done(a) => Ok((chunk.len(), a)),
                    Bulk::Unsupported => bail!("POST {api}/stations/bulk stopped being available"),
                }
            })
            .buffer_unordered(PARALLEL_BULK);
        while let Some(r) = rest.next().await {
            let (n, a) = r?;
            created += a.created;
            existing += a.existing;
            generated.extend(a.generated.into_iter().map(|g| (g.id, g.password)));
            done += n;
            progress(done, ids.len(), BULK_CHUNK);
        }
        return Ok((created, existing, "bulk", generated));
    }
    eprintln!("note: {api}/stations/bulk is not offered; creating the stations one by one");
    let mut results = futures_util::stream::iter(ids)
        .map(|id| async move {
            let r = client
                .post(format!("{api}/stations"))
                .bearer_auth(token)
                .json(&station_body(id, plan.station_password))
                .send()
                .await
                .with_context(|| format!("POST {api}/stations ({id})"))?;
            match r.status() {
                StatusCode::CREATED => {
                    let answer: Value = r.json().await.with_context(|| format!("POST {api}/stations ({id}) answer"))?;
                    Ok(Some(answer["password"].as_str().map(|p| (id.clone(), p.to_string()))))
                }
                StatusCode::CONFLICT => Ok(None),
                s => bail!("creating station {id} answered {s}: {}", body_text(r).await),
            }
        })
        .buffer_unordered(PARALLEL_CREATES);
    let (mut created, mut done) = (0u64, 0usize);
    while let Some(r) = results.next().await {
        if let Some(password) = r? {
            created += 1;
            generated.extend(password);
        }
        done += 1;
        progress(done, ids.len(), 1000);
    }
    Ok((created, ids.len() as u64 - created, "one by one", generated))
}

/// The stations of a run (`count` of them) and the URL template and tenant to connect with,
/// provisioning them first when `--provision-api` is given.
pub async fn stations_of(t: &TargetArgs, count: usize) -> Result<(Vec<StationCred>, String, String)> {
    stations_in(t, 0..count as u64, SignUp::IfMissing).await
}

/// [`stations_of`] for the stations of the 0-based indices `range` only (a shard's slice): ids
/// `{prefix}{start+1:06}…`, or those lines of the credentials file; only these are provisioned
/// (and the account only if `sign_up` says so).
pub async fn stations_in(
    t: &TargetArgs,
    range: std::ops::Range<u64>,
    sign_up: SignUp,
) -> Result<(Vec<StationCred>, String, String)> {
    let count = range.end as usize;
    if let Some(tpl) = &t.url_template {
        stations::check_template(tpl)?;
        // TLS flags are checked (and client CAs loaded) before anything is provisioned.
        crate::tls::install(&t.tls(), tpl)?;
    }
    let mut tenant = t.tenant.clone();
    let creds = if let Some(path) = &t.credentials {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut all = stations::parse_credentials(&text).with_context(|| format!("{}", path.display()))?;
        if all.len() < count {
            bail!("{} lists {} stations, fewer than --stations {count}", path.display(), all.len());
        }
        all.truncate(count);
        all.drain(..range.start as usize);
        all
    } else {
        let ids = stations::station_ids_in(&t.id_prefix, range.clone());
        match &t.provision_api {
            Some(api) => {
                let email = t.email.clone().unwrap_or_else(|| format!("bench@{}.example.com", t.tenant));
                let done = provision_with(
                    &Plan {
                        api,
                        slug: &t.tenant,
                        email: &email,
                        account_password: &t.account_password,
                        id_tag: &t.id_tag,
                        station_password: t.password.as_deref(),
                        station_ids: &ids,
                    },
                    sign_up,
                )
                .await
                .context("provisioning")?;
                tenant = done.slug;
                match &t.password {
                    Some(p) => ids.into_iter().map(|id| StationCred { id, password: Some(p.clone()) }).collect(),
                    None => with_generated(ids, done.generated)?,
                }
            }
            None => ids.into_iter().map(|id| StationCred { id, password: t.password.clone() }).collect(),
        }
    };
    if let Some(path) = &t.save_credentials {
        let lines: String =
            creds.iter().map(|c| format!("{},{}\n", c.id, c.password.as_deref().unwrap_or_default())).collect();
        std::fs::write(path, lines).with_context(|| format!("writing {}", path.display()))?;
    }
    let template = match (&t.url_template, &t.provision_api) {
        (Some(tpl), _) => tpl.clone(),
        (None, Some(api)) => stations::template_from_api(api)?,
        (None, None) => "ws://127.0.0.1:8180/ocpp/{tenant}/{id}".to_string(),
    };
    stations::check_template(&template)?;
    if t.url_template.is_none() {
        crate::tls::install(&t.tls(), &template)?;
    }
    Ok((creds, template, tenant))
}

/// The stations with the passwords the server generated for them; an error naming what to do when
/// some existed already (their passwords were generated by an earlier run and are not known here).
fn with_generated(ids: Vec<String>, mut generated: HashMap<String, String>) -> Result<Vec<StationCred>> {
    let unknown: Vec<&String> = ids.iter().filter(|id| !generated.contains_key(*id)).collect();
    if let Some(first) = unknown.first() {
        bail!(
            "{} of the stations ({first} among them) existed already, with passwords the server generated for an \
             earlier run: pass that run's --save-credentials file as --credentials, or the password they were made \
             with as --password, or provision others (--id-prefix, --tenant, a fresh server)",
            unknown.len()
        );
    }
    Ok(ids
        .into_iter()
        .map(|id| {
            let password = generated.remove(&id);
            StationCred { id, password }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_body_lists_ids_with_the_password_or_asks_for_generated_ones() {
        let ids = stations::station_ids("B", 3);
        let v = bulk_body(&ids, Some("pw-0123456789abcdef"));
        assert_eq!(v["stations"].as_array().unwrap().len(), 3);
        assert_eq!(v["stations"][2], json!({"id": "B000003", "password": "pw-0123456789abcdef"}));
        assert_eq!(bulk_body(&ids, None)["stations"][1], json!({"id": "B000002"}));
    }

    #[test]
    fn generated_passwords_go_to_their_stations_and_unknown_ones_are_an_error() {
        let ids = stations::station_ids("B", 2);
        let generated: HashMap<String, String> =
            [("B000001".into(), "p1".into()), ("B000002".into(), "p2".into())].into_iter().collect();
        let creds = with_generated(ids.clone(), generated).unwrap();
        assert_eq!(creds[1].id, "B000002");
        assert_eq!(creds[1].password.as_deref(), Some("p2"));
        let only_one: HashMap<String, String> = [("B000001".into(), "p1".into())].into_iter().collect();
        let e = with_generated(ids, only_one).unwrap_err().to_string();
        assert!(e.starts_with("1 of the stations (B000002 among them) existed already"), "{e}");
    }

    #[test]
    fn bulk_answer_parses() {
        let a: BulkAnswer = serde_json::from_str(r#"{"created": 998, "existing": 2, "extra": true}"#).unwrap();
        assert_eq!(a, BulkAnswer { created: 998, existing: 2, generated: vec![] });
        let a: BulkAnswer =
            serde_json::from_str(r#"{"created": 1, "existing": 0, "generated": [{"id": "B1", "password": "x"}]}"#)
                .unwrap();
        assert_eq!(a.generated, vec![GeneratedPassword { id: "B1".into(), password: "x".into() }]);
    }

    #[test]
    fn a_hundred_thousand_stations_make_a_hundred_requests() {
        let ids = stations::station_ids("B", 100_000);
        assert_eq!(ids.chunks(BULK_CHUNK).count(), 100);
        assert!(ids.chunks(BULK_CHUNK).all(|c| c.len() <= 1000));
    }
}
