//! `veriflash station`: the security of the page's server, as a browser or an attacker meets
//! it over real loopback connections — the token on every request (the event stream too),
//! requests of another origin refused, loopback only by default, a package that cannot be
//! replaced — and a file-backed device flashed through the buttons.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
use common::{Station, code, ok, stderr, veriflash};

use std::path::Path;

use serde_json::Value;

/// A key, a file-backed device `dev.img` and two signed packages for it in `dir`:
/// `update.vfp` (2.4.0, security version 7) and `newer.vfp` (9.9.9, security version 9).
fn setup(dir: &Path) {
    std::fs::write(
        dir.join("layout.toml"),
        "product = \"acme-hotspot-x1\"\nchipset = \"mdm9607\"\nhardware_revision = \"r2\"\n\
         [[partition]]\nname = \"boot\"\nsize = 1048576\nab = true\n",
    )
    .unwrap();
    ok(&veriflash(
        &["device", "init", "--layout", "layout.toml", "file:dev.img"],
        dir,
    ));
    let boot: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("boot.img"), boot).unwrap();
    ok(&veriflash(&["keygen", "--out", "vendor.pem"], dir));
    for (name, version, security) in [("update", "2.4.0", 7), ("newer", "9.9.9", 9)] {
        std::fs::write(
            dir.join(format!("{name}.toml")),
            format!(
                "product = \"acme-hotspot-x1\"\nchipset = \"mdm9607\"\nversion = \"{version}\"\n\
                 security_version = {security}\n\
                 [[image]]\nname = \"boot\"\npartition = \"boot\"\nfile = \"boot.img\"\n"
            ),
        )
        .unwrap();
        ok(&veriflash(
            &[
                "pack",
                "--manifest",
                &format!("{name}.toml"),
                "--key",
                "vendor.pem",
                "--out",
                &format!("{name}.vfp"),
            ],
            dir,
        ));
    }
}

fn start(dir: &Path) -> Station {
    Station::start(
        &[
            "--package",
            "update.vfp",
            "--trust",
            "vendor.pub.pem",
            "--target",
            "file:dev.img",
        ],
        dir,
    )
}

/// Every path the page uses.
const PATHS: [&str; 7] = [
    "/",
    "/station.js",
    "/station.css",
    "/api/state",
    "/api/events",
    "/api/history.csv",
    "/api/history.json",
];

#[test]
fn every_request_needs_the_token_including_the_event_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    let station = start(dir);
    assert!(
        station.url.starts_with("http://127.0.0.1:"),
        "{}",
        station.url
    );
    let wrong = "0".repeat(64);
    for path in PATHS {
        let none = station.request("GET", path, &[], "");
        assert_eq!(none.status, 401, "{path}: {none:?}");
        assert!(none.body.contains("access token"), "{path}: {none:?}");
        let bad = station.request("GET", &format!("{path}?token={wrong}"), &[], "");
        assert_eq!(bad.status, 401, "{path}: {bad:?}");
        let header = station.request("GET", path, &[("X-Veriflash-Token", &wrong)], "");
        assert_eq!(header.status, 401, "{path}: {header:?}");
        let good = station.get(path);
        assert_eq!(good.status, 200, "{path}: {good:?}");
        // The token is in the URL: it must never leave for another site.
        assert_eq!(
            good.header("referrer-policy"),
            Some("no-referrer"),
            "{path}"
        );
        assert!(
            good.header("content-security-policy")
                .is_some_and(|c| c.contains("default-src 'none'")),
            "{path}: {good:?}"
        );
    }
    // The event stream, with the token: a snapshot first.
    let events = station.get("/api/events");
    assert_eq!(
        events.header("content-type"),
        Some("text/event-stream"),
        "{events:?}"
    );
    assert!(events.body.contains("\"type\":\"snapshot\""), "{events:?}");
    // The page links its script and style with the token, and nothing outside.
    let page = station.get("/").body;
    assert!(
        page.contains(&format!("/station.js?token={}", station.token)),
        "{page}"
    );
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "{page}"
    );
    // A button with the token only in the query (as a link could carry it) is refused.
    let query_only = station.request(
        "POST",
        &format!("/api/flash?token={}", station.token),
        &[("Content-Type", "application/json")],
        r#"{"all":true}"#,
    );
    assert_eq!(query_only.status, 401, "{query_only:?}");
    assert!(station.state()["history"].as_array().unwrap().is_empty());
}

#[test]
fn requests_from_another_origin_or_host_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    let before = std::fs::read(dir.join("dev.img")).unwrap();
    let station = start(dir);
    station.wait_for("the device", |s| s["devices"][0]["state"] == "ready");
    let token = station.token.clone();
    let flash_all = r#"{"all":true}"#;
    let json = ("Content-Type", "application/json");
    let with_token = ("X-Veriflash-Token", token.as_str());
    // Another site's page posting with the token (had it leaked): Origin, then Fetch metadata.
    let cross = station.request(
        "POST",
        "/api/flash",
        &[with_token, json, ("Origin", "http://evil.example")],
        flash_all,
    );
    assert_eq!(cross.status, 403, "{cross:?}");
    let cross_site = station.request(
        "POST",
        "/api/flash",
        &[with_token, json, ("Sec-Fetch-Site", "cross-site")],
        flash_all,
    );
    assert_eq!(cross_site.status, 403, "{cross_site:?}");
    // Fetch metadata refuses reads too: another site cannot read the history or the stream.
    let read = station.request(
        "GET",
        &format!("/api/history.json?token={token}"),
        &[("Sec-Fetch-Site", "same-site")],
        "",
    );
    assert_eq!(read.status, 403, "{read:?}");
    // A form (no JSON, no custom header) cannot press a button.
    let form = station.request(
        "POST",
        "/api/flash",
        &[
            with_token,
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        "all=true",
    );
    assert_eq!(form.status, 415, "{form:?}");
    // DNS rebinding: a name of the attacker's that resolves to 127.0.0.1.
    let rebound = station.request(
        "GET",
        &format!("/api/state?token={token}"),
        &[("Host", &format!("evil.example:{}", station.addr.port()))],
        "",
    );
    assert_eq!(rebound.status, 421, "{rebound:?}");
    // A preflight gets no CORS permission.
    let preflight = station.request(
        "OPTIONS",
        "/api/flash",
        &[
            ("Origin", "http://evil.example"),
            ("Access-Control-Request-Method", "POST"),
        ],
        "",
    );
    assert_ne!(preflight.status, 200, "{preflight:?}");
    assert!(preflight.header("access-control-allow-origin").is_none());
    // None of it installed anything.
    assert!(station.state()["history"].as_array().unwrap().is_empty());
    assert_eq!(std::fs::read(dir.join("dev.img")).unwrap(), before);
    // The page's own request, same origin, does.
    let own = station.post("/api/flash", flash_all);
    assert_eq!(own.status, 202, "{own:?}");
    station.wait_for("the install", |s| {
        s["history"].as_array().unwrap().len() == 1
    });
}

#[test]
fn loopback_by_default_and_other_addresses_only_when_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    for listen in ["0.0.0.0:0", "[::]:0", "localhost:0", "station.example:80"] {
        let out = veriflash(
            &[
                "station",
                "--package",
                "update.vfp",
                "--trust",
                "vendor.pub.pem",
                "--listen",
                listen,
            ],
            dir,
        );
        assert_eq!(code(&out), 72, "{listen}: {}", stderr(&out));
        assert!(stderr(&out).contains("--listen"), "{}", stderr(&out));
    }
    let default = start(dir);
    assert!(default.addr.ip().is_loopback(), "{}", default.url);
    let named = Station::start(
        &[
            "--package",
            "update.vfp",
            "--trust",
            "vendor.pub.pem",
            "--listen",
            "127.0.0.1:0",
        ],
        dir,
    );
    assert!(named.addr.ip().is_loopback());
    assert_ne!(named.token, default.token, "a fresh token each start");
}

#[test]
fn the_package_cannot_be_replaced_and_the_verified_bytes_are_flashed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    let station = start(dir);
    let state = station.wait_for("the device", |s| s["devices"][0]["state"] == "ready");
    let package = &state["package"];
    assert_eq!(package["version"], "2.4.0");
    assert_eq!(package["security_version"], 7);
    let steps: Vec<&str> = package["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["ok"] == true)
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["signature", "integrity", "verified"]);
    let id = package["package_id"].as_str().unwrap().to_owned();
    // No route takes a package, whatever the method.
    let newer = std::fs::read(dir.join("newer.vfp")).unwrap();
    for (method, path) in [
        ("POST", "/api/package"),
        ("PUT", "/api/package"),
        ("POST", "/"),
        ("PUT", "/api/state"),
    ] {
        let r = station.request(
            method,
            path,
            &[
                ("X-Veriflash-Token", &station.token),
                ("Content-Type", "application/json"),
            ],
            &String::from_utf8_lossy(&newer),
        );
        assert!(
            [404, 405, 413].contains(&r.status),
            "{method} {path}: {r:?}"
        );
    }
    // Replacing the file on disk after the start changes nothing: the station flashes the
    // bytes it verified.
    std::fs::copy(dir.join("newer.vfp"), dir.join("update.vfp")).unwrap();
    let r = station.post("/api/flash", r#"{"targets":["file:dev.img"]}"#);
    assert_eq!(r.status, 202, "{r:?}");
    let state = station.wait_for("the install", |s| {
        s["history"].as_array().unwrap().len() == 1
    });
    let record = &state["history"][0];
    assert_eq!(record["result"], "installed", "{state:#}");
    assert_eq!(record["code"], 0);
    assert_eq!(record["package_id"], id.as_str());
    assert_eq!(record["version"], "2.4.0");
    drop(station);
    let status: Value = serde_json::from_str(&ok(&veriflash(
        &["status", "--target", "file:dev.img", "--json"],
        dir,
    )))
    .unwrap();
    assert_eq!(status["status"]["installed_version"], "2.4.0", "{status:#}");
    assert_eq!(status["status"]["security_floor"], 7, "{status:#}");
}

#[test]
fn a_package_that_does_not_verify_is_never_served() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    let mut bytes = std::fs::read(dir.join("update.vfp")).unwrap();
    let last = bytes.len() - 100;
    bytes[last] ^= 0x40;
    std::fs::write(dir.join("bad.vfp"), bytes).unwrap();
    let out = veriflash(
        &[
            "station",
            "--package",
            "bad.vfp",
            "--trust",
            "vendor.pub.pem",
        ],
        dir,
    );
    // A corrupted chunk (integrity_mismatch), found before anything listens.
    assert_eq!(code(&out), 30, "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "no URL: {}", common::stdout(&out));
}

/// A stock EC25 package rewrites the modem's partition table (its MIBIB step): a station
/// started without `--allow-partition-table` refuses it on the modem with protected_partition
/// (49), one started with it installs it, as `flash` does.
#[test]
fn a_partition_table_is_rewritten_only_by_a_station_that_allows_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    common::ec25_package(dir);
    for (extra, result, expected) in [
        (None, "refused", 49),
        (Some("--allow-partition-table"), "installed", 0),
    ] {
        let mut args = vec![
            "--package",
            "ec25.vfp",
            "--trust",
            "vendor.pub.pem",
            "--target",
            "mdm9x07:emulator:ec25",
        ];
        args.extend(extra);
        let station = Station::start(&args, dir);
        let ready = station.wait_for("the modem", |s| s["devices"][0]["state"] == "ready");
        // The page shows, before any click, whether a partition table may be rewritten.
        assert_eq!(
            ready["package"]["partition_table_rewrites"],
            extra.is_some(),
            "{ready:#}"
        );
        let r = station.post("/api/flash", r#"{"targets":["mdm9x07:emulator:ec25"]}"#);
        assert_eq!(r.status, 202, "{r:?}");
        let state = station.wait_for("the install", |s| {
            s["history"].as_array().unwrap().len() == 1
        });
        let record = &state["history"][0];
        assert_eq!(record["result"], result, "{extra:?}: {state:#}");
        assert_eq!(record["code"], expected, "{extra:?}: {state:#}");
    }
}
