//! Runs the Core Rule Set in process over a corpus file of the shared WAF
//! corpus format and prints, per record, what the rules concluded: a tool
//! for seeing why a request is blocked or passed without a gateway.
//!
//!     cargo run --release --example crs_explain -- ../shared/waf-corpus/benign-dev.jsonl [--crs DIR] [--paranoia N] [--all]
//!
//! Prints blocked records (all records with `--all`) as
//! `id expect outcome score: rule target=value ...`.

use std::path::PathBuf;

use frontdesk::waf::seclang::{Crs, CrsOptions};
use frontdesk::waf::RequestView;
use http::{HeaderMap, HeaderName, HeaderValue};

fn main() {
    let mut args = std::env::args().skip(1);
    let mut corpus = None;
    let mut dir = PathBuf::from("/usr/share/modsecurity-crs");
    let mut paranoia = 1;
    let mut all = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--crs" => dir = PathBuf::from(args.next().expect("--crs DIR")),
            "--paranoia" => {
                paranoia = args
                    .next()
                    .and_then(|p| p.parse().ok())
                    .expect("--paranoia N")
            }
            "--all" => all = true,
            other => corpus = Some(other.to_string()),
        }
    }
    let corpus =
        corpus.expect("usage: crs_explain CORPUS.jsonl [--crs DIR] [--paranoia N] [--all]");
    let crs = Crs::load(&CrsOptions {
        dir,
        setup: None,
        paranoia,
        detection_paranoia: paranoia,
        anomaly_threshold: 5,
        exclude: Vec::new(),
    })
    .unwrap_or_else(|e| panic!("{}", e.join("\n")));
    let text = std::fs::read_to_string(&corpus).expect("read corpus");
    let (mut n, mut blocked) = (0, 0);
    for line in text.lines() {
        let Ok(r) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if r.get("raw_b64").is_some() {
            continue;
        }
        let mut headers = HeaderMap::new();
        for h in r["headers"].as_array().into_iter().flatten() {
            let (Some(k), Some(v)) = (h[0].as_str(), h[1].as_str()) else {
                continue;
            };
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                headers.append(k, v);
            }
        }
        let uri = r["uri"].as_str().unwrap_or("/");
        let path = uri.split('?').next().unwrap_or("/");
        let method = r["method"].as_str().unwrap_or("GET");
        let body = match (r["body"].as_str(), r["body_b64"].as_str()) {
            (Some(b), _) => Some(b.as_bytes().to_vec()),
            (None, Some(b)) => {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.decode(b).ok()
            }
            _ => None,
        };
        let mut view = RequestView::new(
            method,
            path,
            uri.as_bytes(),
            &headers,
            Some([127, 0, 0, 1].into()),
        );
        // As the gateway names what Pingora parsed (it refuses other
        // versions before any rule runs).
        view.protocol = frontdesk::waf::request::protocol_name(
            match r["version"].as_str().unwrap_or("HTTP/1.1") {
                "HTTP/0.9" => http::Version::HTTP_09,
                "HTTP/1.0" => http::Version::HTTP_10,
                "HTTP/2" | "HTTP/2.0" => http::Version::HTTP_2,
                _ => http::Version::HTTP_11,
            },
        );
        if let Some(b) = &body {
            let ct = headers
                .get(http::header::CONTENT_TYPE)
                .map(|v| v.as_bytes().to_vec());
            view.set_body(ct.as_deref(), b);
        }
        let v = crs.run(&view, &[]);
        n += 1;
        if v.deny.is_some() {
            blocked += 1;
        }
        if all || v.deny.is_some() {
            let hits: Vec<String> = v
                .hits
                .iter()
                .filter(|h| h.id != 949110)
                .map(|h| format!("{} {}={:?}", h.id, h.target, h.value))
                .collect();
            println!(
                "{} {} {} {}: {}",
                r["id"].as_str().unwrap_or("?"),
                r["expect"].as_str().unwrap_or("?"),
                if v.deny.is_some() { "BLOCK" } else { "pass" },
                v.score,
                hits.join(" | ")
            );
        }
    }
    eprintln!("{blocked}/{n} blocked");
}
