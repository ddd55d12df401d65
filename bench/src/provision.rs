//! Provisioning on an ocpp-css server through its REST API: account, sign-in, id tag, stations.

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

pub struct Plan<'a> {
    /// API base, e.g. `http://127.0.0.1:8180/api/v1`.
    pub api: &'a str,
    pub slug: &'a str,
    pub email: &'a str,
    pub account_password: &'a str,
    pub id_tag: &'a str,
    pub station_password: &'a str,
    pub station_ids: &'a [String],
}

/// Stations created in parallel; the server hashes each password with argon2.
const PARALLEL_CREATES: usize = 4;

async fn body_text(r: reqwest::Response) -> String {
    r.text().await.unwrap_or_default()
}

/// Makes sure the account, its Accepted id tag and the stations exist; returns the account's slug.
/// Stations that exist already (409) are assumed to have `station_password`.
pub async fn provision(plan: &Plan<'_>) -> Result<String> {
    let api = plan.api.trim_end_matches('/');
    let client = Client::builder().timeout(Duration::from_secs(60)).build()?;

    let r = client
        .post(format!("{api}/accounts"))
        .json(&json!({"email": plan.email, "password": plan.account_password,
                      "name": format!("ocpp-bench {}", plan.slug), "slug": plan.slug}))
        .send()
        .await
        .with_context(|| format!("POST {api}/accounts"))?;
    let account = match r.status() {
        StatusCode::CREATED => "created",
        StatusCode::CONFLICT => "exists",
        s => bail!("POST {api}/accounts answered {s}: {}", body_text(r).await),
    };

    let r = client
        .post(format!("{api}/sessions"))
        .json(&json!({"email": plan.email, "password": plan.account_password}))
        .send()
        .await
        .with_context(|| format!("POST {api}/sessions"))?;
    if !r.status().is_success() {
        let s = r.status();
        bail!(
            "signing in as {} answered {s}: {} (if the account exists with another password, or slug {:?} \
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

    let results: Vec<Result<bool>> = futures_util::stream::iter(plan.station_ids)
        .map(|id| {
            let (client, token) = (&client, &token);
            async move {
                let r = client
                    .post(format!("{api}/stations"))
                    .bearer_auth(token)
                    .json(&json!({"id": id, "password": plan.station_password}))
                    .send()
                    .await
                    .with_context(|| format!("POST {api}/stations ({id})"))?;
                match r.status() {
                    StatusCode::CREATED => Ok(true),
                    StatusCode::CONFLICT => Ok(false),
                    s => bail!("creating station {id} answered {s}: {}", body_text(r).await),
                }
            }
        })
        .buffer_unordered(PARALLEL_CREATES)
        .collect()
        .await;
    let mut created = 0;
    for r in results {
        if r? {
            created += 1;
        }
    }
    eprintln!(
        "provisioned: account {} ({account}), id tag {}, {} stations ({created} created, {} existing)",
        plan.email,
        plan.id_tag,
        plan.station_ids.len(),
        plan.station_ids.len() - created
    );
    Ok(slug)
}
