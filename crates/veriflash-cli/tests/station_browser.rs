//! `veriflash station` in a real browser: three modems emulated on pseudo-terminals (one of
//! them the wrong chip) appear on the page by discovery; headless Chromium, driven through
//! chromedriver (WebDriver, the fantoccini client), clicks "Flash all"; the page shows two
//! installs and one refusal with code 41, and the history it exports (CSV and JSON) is what
//! it shows.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them); without them the
//! test fails and says how to install them. With `VERIFLASH_STATION_SCREENSHOTS=DIR` it saves
//! the page before and after the flash as `DIR/station-ready.png` and `DIR/station-done.png`
//! (the screenshots of docs/STATION.md).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
use common::{Emulated, Server, Station, http_request, mdm9607_package, tool};

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// chromedriver on a free loopback port, driving Debian's headless Chromium with a fresh
/// profile in `profile`.
struct Browser {
    _driver: Server,
    client: Client,
}

impl Browser {
    async fn start(profile: &Path) -> Self {
        let install = "apt-get install -y chromium chromium-driver";
        let chromium = tool("VERIFLASH_CHROMIUM", "chromium", &["/usr/bin"], install);
        let chromedriver = tool(
            "VERIFLASH_CHROMEDRIVER",
            "chromedriver",
            &["/usr/bin"],
            install,
        );
        let port = Server::free_port();
        let log = profile.join("chromedriver.log");
        let mut command = Command::new(chromedriver);
        command
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()));
        let driver = Server::start(command, port, &log);
        let data_dir = profile.join("chromium");
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1280,1280",
                    format!("--user-data-dir={}", data_dir.display()),
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://{}", driver.addr))
            .await
            .unwrap_or_else(|e| {
                let said = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("chromedriver could not start Chromium: {e}\n{said}")
            });
        Self {
            _driver: driver,
            client,
        }
    }

    /// The elements matching `css` once `done` holds for them (up to 60 s).
    async fn wait_for(
        &self,
        what: &str,
        css: &str,
        done: impl Fn(&[fantoccini::elements::Element]) -> bool,
    ) -> Vec<fantoccini::elements::Element> {
        let start = Instant::now();
        loop {
            let found = self.client.find_all(Locator::Css(css)).await.unwrap();
            if done(&found) {
                return found;
            }
            if start.elapsed() > Duration::from_secs(60) {
                let page = self.client.source().await.unwrap_or_default();
                panic!("the page never showed {what}:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn texts(&self, css: &str) -> Vec<String> {
        let mut texts = Vec::new();
        for e in self.client.find_all(Locator::Css(css)).await.unwrap() {
            texts.push(e.text().await.unwrap());
        }
        texts
    }

    async fn screenshot(&self, name: &str) {
        if let Some(dir) = std::env::var_os("VERIFLASH_STATION_SCREENSHOTS") {
            let png = self.client.screenshot().await.unwrap();
            std::fs::write(Path::new(&dir).join(name), png).unwrap();
        }
    }
}

/// The fields of one CSV line (RFC 4180 quoting).
fn csv_row(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().unwrap().push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

#[test]
fn flash_all_in_chromium_installs_two_modems_refuses_the_wrong_chip_and_exports_the_history() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    mdm9607_package(dir, 400_000, 900_000);
    let _modems = [
        Emulated::announced(&["--serial", "5A0001"], dir),
        Emulated::announced(&["--serial", "5A0002"], dir),
        Emulated::announced(&["--chip", "msm8916", "--serial", "5A0003"], dir),
    ];
    let station = Station::start(
        &["--package", "update.vfp", "--trust", "vendor.pub.pem"],
        dir,
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let browser = Browser::start(dir).await;
        browser.client.goto(&station.url).await.unwrap();

        // The package and its verification, before any device is touched.
        let steps = browser.texts("#steps li").await;
        assert_eq!(steps.len(), 3, "{steps:?}");
        for (step, name) in steps.iter().zip(["Signature", "Integrity", "Verified"]) {
            assert!(step.starts_with(&format!("✓ {name}")), "{steps:?}");
        }
        let facts = browser.texts("#package dd").await.join("\n");
        assert!(facts.contains("acme-hotspot-x1") && facts.contains("2.4.0"), "{facts}");
        assert!(
            browser.texts("#history tbody tr").await.is_empty(),
            "nothing installed before a click"
        );

        // The three modems appear, identified, waiting for a click.
        browser
            .wait_for("three identified modems", "#devices tbody tr[data-state=ready]", |rows| {
                rows.len() == 3
            })
            .await;
        let identities = browser.texts("#devices tbody tr td:nth-child(2)").await.join("\n");
        assert_eq!(identities.matches("mdm9607").count(), 2, "{identities}");
        assert!(identities.contains("msm8916"), "{identities}");
        assert!(identities.contains("serial mdm9x07-005a0003"), "{identities}");
        browser.screenshot("station-ready.png").await;

        browser
            .client
            .find(Locator::Css("#flash-all"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let done = "#devices tbody tr[data-state=succeeded], #devices tbody tr[data-state=failed]";
        browser
            .wait_for("three results", done, |rows| rows.len() == 3)
            .await;
        browser
            .wait_for("three history records", "#history tbody tr", |rows| {
                rows.len() == 3
            })
            .await;
        browser.screenshot("station-done.png").await;

        let mut codes = Vec::new();
        for cell in browser
            .client
            .find_all(Locator::Css("#devices tbody td.result"))
            .await
            .unwrap()
        {
            let code = cell.attr("data-code").await.unwrap().unwrap();
            let text = cell.text().await.unwrap();
            match code.as_str() {
                "0" => assert!(text.contains("installed"), "{text}"),
                "41" => {
                    assert!(text.contains("refused · code 41"), "{text}");
                    assert!(text.contains("Remedy:"), "{text}");
                }
                other => panic!("unexpected code {other}: {text}"),
            }
            codes.push(code);
        }
        codes.sort();
        assert_eq!(codes, ["0", "0", "41"]);

        // The history the page shows is the history it exports.
        let mut shown: Vec<Vec<String>> = Vec::new();
        for row in browser
            .client
            .find_all(Locator::Css("#history tbody tr"))
            .await
            .unwrap()
        {
            let mut cells = Vec::new();
            for cell in row.find_all(Locator::Css("td")).await.unwrap() {
                cells.push(cell.text().await.unwrap());
            }
            shown.push(cells);
        }
        let export = |id: &'static str| {
            let browser = &browser;
            async move {
                let href = browser
                    .client
                    .find(Locator::Css(id))
                    .await
                    .unwrap()
                    .prop("href")
                    .await
                    .unwrap()
                    .unwrap();
                let path = href.split_once(&station.addr.to_string()).unwrap().1.to_owned();
                let response = http_request(station.addr, "GET", &path, &[], "");
                assert_eq!(response.status, 200, "{response:?}");
                assert!(
                    response
                        .header("content-disposition")
                        .is_some_and(|d| d.starts_with("attachment")),
                    "{response:?}"
                );
                response.body
            }
        };
        let csv = export("#export-csv").await;
        let mut lines = csv.lines();
        assert_eq!(
            lines.next(),
            Some(
                "device_serial,target,chip,package_id,product,version,result,code,error,started,finished"
            )
        );
        let rows: Vec<Vec<String>> = lines.map(csv_row).collect();
        assert_eq!(rows.len(), shown.len(), "{csv}");
        let json: Value = serde_json::from_str(&export("#export-json").await).unwrap();
        let records = json["records"].as_array().unwrap();
        assert_eq!(records.len(), shown.len(), "{json:#}");
        let package_id = station.state()["package"]["package_id"].clone();
        for ((cells, row), record) in shown.iter().zip(&rows).zip(records) {
            // Page: serial, target, package, result, code, started, finished.
            assert_eq!(cells[0], row[0]);
            assert_eq!(cells[1], row[1]);
            assert_eq!(cells[3], row[6]);
            assert_eq!(cells[4], row[7]);
            assert_eq!(cells[5], row[9]);
            assert_eq!(record["device_serial"], cells[0].as_str());
            assert_eq!(record["result"], cells[3].as_str());
            assert_eq!(record["code"].to_string(), cells[4]);
            assert_eq!(record["package_id"], package_id);
            assert_eq!(row[3], package_id.as_str().unwrap());
            assert_eq!(row.len(), 11, "{row:?}");
        }
        let mut results: Vec<(&str, &str)> =
            rows.iter().map(|r| (r[6].as_str(), r[7].as_str())).collect();
        results.sort_unstable();
        assert_eq!(
            results,
            [("installed", "0"), ("installed", "0"), ("refused", "41")]
        );
        let refused = rows.iter().find(|r| r[7] == "41").unwrap();
        assert_eq!(refused[0], "mdm9x07-005a0003");
        assert_eq!(refused[2], "msm8916");

        browser.client.close().await.unwrap();
    });
}
