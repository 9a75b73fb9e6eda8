#!/usr/bin/env python3
"""The CycloneDX SBOM of a runner-fence binary, as cargo-cyclonedx writes it, made reproducible
and tied to the binary; and its check.

    sbom.py finish IN OUT --epoch SECONDS --binary PATH --version VERSION
    sbom.py check SBOM --binary PATH --version VERSION --lock Cargo.lock

finish: the timestamp becomes SOURCE_DATE_EPOCH, the serial number a UUID derived from the
content (cargo-cyclonedx writes a random one), the crate's references no longer name the
checkout's path, and the binary's SHA-256 is added to the metadata component, so the SBOM
names exactly the file it describes.

check: valid against the CycloneDX 1.5 JSON schema (cyclonedx-python-lib, strict), describes
runner-fence VERSION with that binary's hash, and every component is a package of Cargo.lock
at its locked version (and the TLS and Kubernetes crates the binary cannot do without are
listed). Every failure names what is wrong.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import tomllib
import uuid
from pathlib import Path

# Crates that are certainly linked into the binary (so certainly in a correct SBOM).
REQUIRED = ("ring", "rustls", "tokio", "kube-client", "k8s-openapi", "axum", "serde_json")


class Fail(Exception):
    pass


def load(path: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise Fail(f"{path}: {e}") from e


def sha256(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as e:
        raise Fail(f"{path}: {e.strerror}") from e


def finish(args) -> None:
    bom = load(args.input)
    meta = bom.setdefault("metadata", {})
    meta["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(args.epoch))
    comp = meta.get("component")
    if not isinstance(comp, dict) or comp.get("name") != "runner-fence":
        raise Fail(f"{args.input}: metadata.component is not runner-fence")
    if comp.get("version") != args.version:
        raise Fail(f"{args.input}: metadata.component.version is {comp.get('version')!r}, expected {args.version}")
    comp["hashes"] = [{"alg": "SHA-256", "content": sha256(args.binary)}]
    # cargo-cyclonedx names the crate by its cargo package id, path+file:///CHECKOUT#...:
    # the same SBOM from any checkout names it by name and version instead.
    local_id = comp.get("bom-ref", "")
    if local_id.startswith("path+file://"):
        bom = json.loads(json.dumps(bom).replace(json.dumps(local_id)[1:-1], f"runner-fence@{args.version}"))
    bom.pop("serialNumber", None)
    body = json.dumps(bom, sort_keys=True, separators=(",", ":")).encode()
    bom["serialNumber"] = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, hashlib.sha256(body).hexdigest())}"
    Path(args.output).write_text(json.dumps(bom, indent=2, sort_keys=True) + "\n")


def check(args) -> None:
    text = Path(args.sbom).read_text()
    bom = load(args.sbom)
    try:
        from cyclonedx.schema import SchemaVersion
        from cyclonedx.validation.json import JsonStrictValidator
    except ImportError as e:
        raise Fail(f"cyclonedx-python-lib[json-validation] is needed for the schema check: {e}") from e
    if bom.get("bomFormat") != "CycloneDX" or bom.get("specVersion") != "1.5":
        raise Fail(f"{args.sbom}: not a CycloneDX 1.5 document (bomFormat {bom.get('bomFormat')!r}, "
                   f"specVersion {bom.get('specVersion')!r})")
    error = JsonStrictValidator(SchemaVersion.V1_5).validate_str(text)
    if error is not None:
        raise Fail(f"{args.sbom}: not valid against the CycloneDX 1.5 schema: {error}")
    if "path+file://" in text:
        raise Fail(f"{args.sbom}: names a checkout path (path+file://), so it depends on where it was built")
    comp = bom.get("metadata", {}).get("component", {})
    if comp.get("name") != "runner-fence" or comp.get("version") != args.version:
        raise Fail(f"{args.sbom}: describes {comp.get('name')} {comp.get('version')}, expected runner-fence {args.version}")
    want = sha256(args.binary)
    got = [h.get("content") for h in comp.get("hashes", []) if h.get("alg") == "SHA-256"]
    if got != [want]:
        raise Fail(f"{args.sbom}: SHA-256 {got} does not name {args.binary} ({want})")
    try:
        lock = tomllib.loads(Path(args.lock).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise Fail(f"{args.lock}: {e}") from e
    locked = {(p["name"], p["version"]) for p in lock.get("package", [])}
    components = bom.get("components", [])
    names = set()
    for c in components:
        key = (c.get("name"), c.get("version"))
        if key not in locked:
            raise Fail(f"{args.sbom}: component {key[0]} {key[1]} is not in {args.lock}")
        if not str(c.get("purl", "")).startswith(f"pkg:cargo/{key[0]}@{key[1]}"):
            raise Fail(f"{args.sbom}: component {key[0]} has purl {c.get('purl')!r}")
        names.add(key[0])
    missing = [n for n in REQUIRED if n not in names]
    if missing:
        raise Fail(f"{args.sbom}: lacks components the binary links: {', '.join(missing)}")
    print(f"{args.sbom}: CycloneDX 1.5, runner-fence {args.version}, {len(components)} components from "
          f"{args.lock}, binary sha256 {want[:16]}...")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("finish")
    f.add_argument("input")
    f.add_argument("output")
    f.add_argument("--epoch", type=int, required=True)
    f.add_argument("--binary", required=True)
    f.add_argument("--version", required=True)
    c = sub.add_parser("check")
    c.add_argument("sbom")
    c.add_argument("--binary", required=True)
    c.add_argument("--version", required=True)
    c.add_argument("--lock", required=True)
    args = ap.parse_args()
    try:
        {"finish": finish, "check": check}[args.cmd](args)
    except Fail as e:
        print(f"sbom.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
