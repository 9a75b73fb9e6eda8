//! `certs generate` and `certs rotate`, run as the binary: which files each
//! writes or keeps, who signed what, and the exact refusals.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use rstest::rstest;
use x509_parser::prelude::{FromDer, X509Certificate};

fn run(args: &[String]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_runner-fence"))
        .arg("certs")
        .args(args)
        .output()
        .expect("runs");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

/// Every file in `dir` and its contents.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    (name, std::fs::read(e.path()).unwrap_or_default())
                })
                .collect()
        })
        .unwrap_or_default()
}

fn der(pem: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(pem);
    let b64: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("PEM")
}

/// `tls.crt` in `dir` is signed by the CA certificate `ca` (PEM).
fn signed_by(dir: &Path, ca: &[u8]) -> bool {
    let (crt, ca) = (
        der(&std::fs::read(dir.join("tls.crt")).expect("tls.crt")),
        der(ca),
    );
    let (_, crt) = X509Certificate::from_der(&crt).expect("x509");
    let (_, ca) = X509Certificate::from_der(&ca).expect("x509");
    crt.verify_signature(Some(ca.public_key())).is_ok()
}

/// A directory `certs generate` filled, and a second, unrelated CA.
struct Setup {
    _tmp: tempfile::TempDir,
    out: PathBuf,
    other: PathBuf,
    empty: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("certs");
    let other = tmp.path().join("other");
    for d in [&out, &other] {
        let (code, _, err) = run(&["generate".into(), "--out".into(), d.display().to_string()]);
        assert_eq!(code, 0, "{err}");
    }
    let empty = tmp.path().join("empty");
    Setup {
        _tmp: tmp,
        out,
        other,
        empty,
    }
}

/// What a command does to the directory it writes.
#[derive(Debug)]
enum Outcome {
    /// Exit 0; these files are new or replaced, the others in the directory kept
    /// byte for byte; `tls.crt` is signed by the directory's (or --ca-cert's) CA.
    Wrote(&'static [&'static str]),
    /// Exit 2 with exactly this on stderr (`{out}`, `{other}`, `{empty}` stand
    /// for the paths); nothing in the directory changed.
    Refused(&'static str),
}

#[rstest]
#[case::generate_into_an_empty_directory(&["generate", "--out", "{empty}"], "{empty}", Outcome::Wrote(&["ca-bundle.txt", "ca.crt", "ca.key", "tls.crt", "tls.key"]))]
#[case::generate_never_overwrites(&["generate", "--out", "{out}"], "{out}", Outcome::Refused("error: {out}/ca.crt exists; pass --force to replace it (a CA key issues every later serving certificate: keep it, and use `certs rotate` for a new serving certificate)\n"))]
#[case::generate_with_force(&["generate", "--out", "{out}", "--force"], "{out}", Outcome::Wrote(&["ca-bundle.txt", "ca.crt", "ca.key", "tls.crt", "tls.key"]))]
#[case::rotate_keeps_the_ca(&["rotate", "--out", "{out}", "--validity-days", "30"], "{out}", Outcome::Wrote(&["tls.crt", "tls.key"]))]
#[case::issue_from_an_existing_ca(&["generate", "--out", "{empty}", "--ca-cert", "{other}/ca.crt", "--ca-key", "{other}/ca.key"], "{empty}", Outcome::Wrote(&["ca-bundle.txt", "ca.crt", "tls.crt", "tls.key"]))]
#[case::existing_ca_never_overwrites(&["generate", "--out", "{out}", "--ca-cert", "{other}/ca.crt", "--ca-key", "{other}/ca.key"], "{out}", Outcome::Refused("error: {out}/ca.crt exists; pass --force to replace it (a CA key issues every later serving certificate: keep it, and use `certs rotate` for a new serving certificate)\n"))]
#[case::existing_ca_in_its_own_directory(&["generate", "--out", "{out}", "--ca-cert", "{out}/ca.crt", "--ca-key", "{out}/ca.key"], "{out}", Outcome::Refused("error: {out}/tls.crt exists; pass --force to replace it (a CA key issues every later serving certificate: keep it, and use `certs rotate` for a new serving certificate)\n"))]
#[case::existing_ca_in_its_own_directory_with_force(&["generate", "--out", "{out}", "--ca-cert", "{out}/ca.crt", "--ca-key", "{out}/ca.key", "--force"], "{out}", Outcome::Wrote(&["tls.crt", "tls.key"]))]
#[case::key_of_another_ca(&["generate", "--out", "{empty}", "--ca-cert", "{out}/ca.crt", "--ca-key", "{other}/ca.key"], "{empty}", Outcome::Refused("error: {other}/ca.key is not the key of the CA certificate {out}/ca.crt\n"))]
#[case::serving_certificate_as_ca(&["generate", "--out", "{empty}", "--ca-cert", "{out}/tls.crt", "--ca-key", "{out}/tls.key"], "{empty}", Outcome::Refused("error: {out}/tls.crt: not a CA certificate (no basicConstraints CA:TRUE)\n"))]
#[case::rotate_without_a_ca_key(&["rotate", "--out", "{empty}"], "{empty}", Outcome::Refused("error: {empty}/ca.crt: No such file or directory (os error 2)\n"))]
#[case::ca_cert_without_its_key(&["generate", "--out", "{empty}", "--ca-cert", "{out}/ca.crt"], "{empty}", Outcome::Refused("error: the following required arguments were not provided:\n  --ca-key <CA_KEY>\n\nUsage: runner-fence certs generate --out <OUT> --ca-cert <CA_CERT> --ca-key <CA_KEY>\n\nFor more information, try '--help'.\n"))]
fn certificate_commands(#[case] args: &[&str], #[case] dir: &str, #[case] outcome: Outcome) {
    let s = setup();
    let fill = |t: &str| {
        t.replace("{out}", &s.out.display().to_string())
            .replace("{other}", &s.other.display().to_string())
            .replace("{empty}", &s.empty.display().to_string())
    };
    let dir = PathBuf::from(fill(dir));
    let before = files(&dir);
    let args: Vec<String> = args.iter().map(|a| fill(a)).collect();
    let (code, stdout, stderr) = run(&args);
    let after = files(&dir);
    match outcome {
        Outcome::Wrote(changed) => {
            assert_eq!(code, 0, "{stderr}");
            let mut names: Vec<&str> = after.keys().map(String::as_str).collect();
            names.retain(|n| before.get(*n) != after.get(*n));
            assert_eq!(names, changed, "files written");
            for (name, old) in &before {
                if !changed.contains(&name.as_str()) {
                    assert_eq!(after.get(name), Some(old), "{name} kept");
                }
            }
            assert!(
                signed_by(&dir, &after["ca.crt"]),
                "tls.crt is signed by ca.crt"
            );
            assert!(
                stdout.starts_with(&format!(
                    "wrote {}/tls.crt and tls.key for runner-fence.runner-fence.svc, ",
                    dir.display()
                )),
                "{stdout}"
            );
        }
        Outcome::Refused(message) => {
            assert_eq!(code, 2, "{stdout}");
            assert_eq!(stderr, fill(message));
            assert_eq!(after, before, "nothing changed");
        }
    }
}

/// A CA from `--ca-cert` is copied into the directory as the caBundle, its key never.
#[test]
fn issuing_from_an_existing_ca_copies_its_certificate_not_its_key() {
    let s = setup();
    let (code, _, err) = run(&[
        "generate".into(),
        "--out".into(),
        s.empty.display().to_string(),
        "--ca-cert".into(),
        s.other.join("ca.crt").display().to_string(),
        "--ca-key".into(),
        s.other.join("ca.key").display().to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    let written = files(&s.empty);
    assert_eq!(
        written["ca.crt"],
        std::fs::read(s.other.join("ca.crt")).expect("ca")
    );
    assert!(!written.contains_key("ca.key"));
    use base64::Engine as _;
    let bundle = base64::engine::general_purpose::STANDARD
        .decode(String::from_utf8_lossy(&written["ca-bundle.txt"]).trim())
        .expect("base64");
    assert_eq!(bundle, written["ca.crt"]);
}
