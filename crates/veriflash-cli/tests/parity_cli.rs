//! The parity table (`veriflash_test_support::parity`) through the library's `Updater` and
//! through the `veriflash` command: the same code for every scenario, and the one the table
//! expects. (The C API's parity test holds the C API to the same table.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use veriflash_test_support::parity::{Pki, SCENARIOS};

#[test]
fn the_command_and_the_library_give_every_scenario_the_same_code() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    for (i, scenario) in SCENARIOS.iter().enumerate() {
        let rust = scenario.run_in_library(&pki, &tmp.path().join(format!("rust{i}")));

        let run = scenario.prepare(&pki, &tmp.path().join(format!("cli{i}")));
        let mut args = vec![
            "flash".to_owned(),
            run.package.display().to_string(),
            "--trust".to_owned(),
            pki.root.display().to_string(),
            "--target".to_owned(),
            run.target.clone(),
            "--json".to_owned(),
        ];
        if scenario.no_clock {
            args.push("--no-clock".to_owned());
        }
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_veriflash"))
            .args(&args)
            .current_dir(tmp.path())
            .env("VERIFLASH_STATE_DIR", &run.state_dir)
            .env("VERIFLASH_CONFIG_DIR", tmp.path().join("config"))
            .output()
            .unwrap();
        run.finish()
            .unwrap_or_else(|e| panic!("{}, command: {e}", scenario.name));
        let cli = u8::try_from(out.status.code().expect("exited")).unwrap();

        assert_eq!(
            (rust, cli),
            (scenario.code, scenario.code),
            "{}: library {rust}, command {cli}\n{}",
            scenario.name,
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
