//! Deployment files: the systemd unit (checked by `systemd-analyze verify`
//! and its offline security score where systemd-analyze exists), the
//! packaged config (it compiles, and its paths match the unit's), and the
//! Debian package built with cargo-deb (its files, conffiles and maintainer
//! scripts). A check whose tool is missing says so and is skipped.

mod common;

use std::path::Path;
use std::process::Command;

const UNIT: &str = "systemd/frontdesk.service";
const PACKAGED_CONFIG: &str = "packaging/frontdesk.toml";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn unit_text() -> String {
    std::fs::read_to_string(root().join(UNIT)).expect("read the unit")
}

fn has_tool(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_unit_has_what_an_edge_node_needs() {
    let unit = unit_text();
    for line in [
        "Type=forking",
        "PIDFile=/run/frontdesk/frontdesk.pid",
        "ExecStartPre=/usr/bin/frontdesk check -c /etc/frontdesk/frontdesk.toml",
        "ExecStart=/usr/bin/frontdesk run -d -c /etc/frontdesk/frontdesk.toml",
        "ExecReload=/usr/bin/frontdesk reload -c /etc/frontdesk/frontdesk.toml",
        "User=frontdesk",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "RuntimeDirectory=frontdesk",
        "LimitNOFILE=1048576",
    ] {
        assert!(
            unit.lines().any(|l| l.trim() == line),
            "{UNIT} lacks {line:?}"
        );
    }
    // Logs go to the journal: no StandardOutput/StandardError redirection.
    assert!(!unit.contains("StandardOutput=") && !unit.contains("StandardError="));
}

#[test]
fn the_packaged_config_compiles_and_matches_the_unit() {
    // Laid out as the package installs it: /etc/frontdesk/frontdesk.toml
    // beside /etc/frontdesk/rules/.
    let etc = tempfile::tempdir().unwrap();
    std::fs::copy(
        root().join(PACKAGED_CONFIG),
        etc.path().join("frontdesk.toml"),
    )
    .unwrap();
    std::fs::create_dir(etc.path().join("rules")).unwrap();
    for entry in std::fs::read_dir(root().join("rules")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, etc.path().join("rules").join(p.file_name().unwrap())).unwrap();
    }
    let (code, stderr) = common::check(&etc.path().join("frontdesk.toml"));
    assert_eq!(code, Some(0), "{stderr}");
    let config = std::fs::read_to_string(root().join(PACKAGED_CONFIG)).unwrap();
    // The pid file systemd follows and the upgrade socket live in the
    // unit's RuntimeDirectory (/run/frontdesk).
    assert!(config.contains("pid_file = \"/run/frontdesk/frontdesk.pid\""));
    assert!(config.contains("upgrade_socket = \"/run/frontdesk/upgrade.sock\""));
    // TimeoutStopSec leaves room for the grace period.
    assert!(
        config.contains("grace_period = \"30s\"") && unit_text().contains("TimeoutStopSec=45s")
    );
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    if !has_tool("systemd-analyze", &["--version"]) {
        eprintln!("SKIPPED: systemd-analyze is not installed (apt-get install systemd)");
        return;
    }
    // verify checks that ExecStart's binary exists: point it at the one
    // cargo built, in a copy of the unit.
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("frontdesk.service");
    std::fs::write(
        &unit,
        unit_text().replace("/usr/bin/frontdesk", common::binary()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Unknown keys and bad values are only warnings: there must be none.
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("frontdesk.service"))
        .collect();
    assert!(about_unit.is_empty(), "{}", about_unit.join("\n"));

    // The offline security score (0 = locked down, 10 = exposed).
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for frontdesk.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in:\n{text}"));
    eprintln!("systemd-analyze security: exposure {score}");
    assert!(score <= 2.5, "exposure {score}:\n{text}");
}

#[test]
fn the_debian_package_has_the_binary_unit_config_and_scripts() {
    if !has_tool(env!("CARGO"), &["deb", "--version"]) {
        eprintln!(
            "SKIPPED: cargo-deb is not installed (cargo install cargo-deb --version 3.8.0 --locked)"
        );
        return;
    }
    if !has_tool("dpkg-deb", &["--version"]) {
        eprintln!("SKIPPED: dpkg-deb is not installed");
        return;
    }
    let out_dir = tempfile::tempdir().unwrap();
    // The binary the tests run (the dev profile, already built): packaging
    // is what is checked here, not a release build.
    let out = Command::new(env!("CARGO"))
        .current_dir(root())
        .args([
            "deb",
            "--no-build",
            "--profile",
            "dev",
            "--fast",
            "--output",
        ])
        .arg(out_dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo deb failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = std::fs::read_dir(out_dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("a .deb was written");

    let listing = Command::new("dpkg-deb")
        .arg("-c")
        .arg(&deb)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    for path in [
        "./usr/bin/frontdesk",
        "./usr/lib/systemd/system/frontdesk.service",
        "./etc/frontdesk/frontdesk.toml",
        "./usr/share/doc/frontdesk/README.md",
        "./etc/frontdesk/rules/sqli.toml",
        "./etc/frontdesk/rules/ip-deny.txt",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(path)),
            "{path} missing from the package:\n{listing}"
        );
    }
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with("./usr/bin/frontdesk")),
        "the binary is executable"
    );

    let control = tempfile::tempdir().unwrap();
    let status = Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(control.path())
        .status()
        .unwrap();
    assert!(status.success());
    let read = |name: &str| std::fs::read_to_string(control.path().join(name)).unwrap_or_default();
    let conffiles = read("conffiles");
    assert!(
        conffiles
            .lines()
            .any(|l| l == "/etc/frontdesk/frontdesk.toml")
            && conffiles
                .lines()
                .any(|l| l == "/etc/frontdesk/rules/sqli.toml"),
        "{conffiles}"
    );
    let fields = read("control");
    assert!(fields.contains("Package: frontdesk"), "{fields}");
    assert!(fields.contains("adduser"), "{fields}");
    let postinst = read("postinst");
    assert!(postinst.contains("adduser --system"), "{postinst}");
    assert!(
        postinst.contains("deb-systemd-helper enable frontdesk.service"),
        "{postinst}"
    );
    assert!(
        postinst.contains("--signal=USR2"),
        "upgrades hand over: {postinst}"
    );
    // The packaged unit is the repository's.
    let unpacked = tempfile::tempdir().unwrap();
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(unpacked.path())
        .status()
        .unwrap();
    assert!(status.success());
    let packaged_unit = std::fs::read_to_string(
        unpacked
            .path()
            .join("usr/lib/systemd/system/frontdesk.service"),
    )
    .unwrap();
    assert_eq!(packaged_unit, unit_text());
}
