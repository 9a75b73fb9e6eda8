#!/usr/bin/env python3
"""Writes runner-fence's image as an OCI image layout, without a container engine or base image.

    oci_image.py build --out DIR --tag TAG --epoch SECONDS --ca-bundle PEM --license FILE
                       [--label KEY=VALUE ...] --binary linux/amd64=PATH [--binary linux/arm64=PATH]
    oci_image.py digest DIR TAG      # the digest of the image index tagged TAG
    oci_image.py layer --out FILE --epoch SECONDS --ca-bundle PEM --license FILE --binary PLATFORM=PATH
                                     # only the filesystem, as a tar (the Dockerfile unpacks it)

One layer per platform, made here byte for byte: the static runner-fence binary, /etc/passwd and
/etc/group with the nonroot user 65532 (as distroless/static:nonroot has), nsswitch.conf, the CA
bundle, a sticky /tmp and the licence. The result is reproducible: entries sorted, every mtime is
SOURCE_DATE_EPOCH, owners numeric with no names, gzip without a timestamp, JSON with sorted keys,
so the same binaries and inputs give the same digests. The tag names an image index (one entry per
platform) even for one platform, as the release pipeline pushes it.

Refuses, naming the file, a binary that is not a static ELF executable for the platform's machine
(a dynamic binary would not start in this image: there is no libc in it).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import struct
import sys
import tarfile
import time
from pathlib import Path

USER = 65532
ENTRYPOINT = "/usr/local/bin/runner-fence"
# The platforms the release builds: OCI platform -> ELF e_machine.
PLATFORMS = {
    "linux/amd64": {"architecture": "amd64", "os": "linux", "machine": 62},
    "linux/arm64": {"architecture": "arm64", "os": "linux", "variant": "v8", "machine": 183},
}
MEDIA = {
    "index": "application/vnd.oci.image.index.v1+json",
    "manifest": "application/vnd.oci.image.manifest.v1+json",
    "config": "application/vnd.oci.image.config.v1+json",
    "layer": "application/vnd.oci.image.layer.v1.tar+gzip",
}


class Fail(Exception):
    pass


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def check_static_elf(path: Path, machine: int, platform: str) -> None:
    """A 64-bit little-endian ELF executable for `machine` without a program interpreter."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise Fail(f"{path}: cannot read the binary: {e.strerror}") from e
    if data[:4] != b"\x7fELF" or len(data) < 64:
        raise Fail(f"{path}: not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise Fail(f"{path}: not a 64-bit little-endian ELF file")
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    if e_machine != machine:
        raise Fail(f"{path}: ELF machine {e_machine}, but {platform} needs {machine}")
    if e_type not in (2, 3):  # EXEC, or DYN for a static-pie
        raise Fail(f"{path}: ELF type {e_type} is not an executable")
    phoff, = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    for i in range(phnum):
        off = phoff + i * phentsize
        if off + 4 > len(data):
            raise Fail(f"{path}: truncated ELF program headers")
        p_type, = struct.unpack_from("<I", data, off)
        if p_type == 3:  # PT_INTERP: needs a dynamic loader and a libc the image does not have
            raise Fail(f"{path}: dynamically linked (it has a program interpreter); "
                       "build it with -C target-feature=+crt-static")


class Layer:
    """A tar stream with fixed metadata; directories are added before what they hold."""

    def __init__(self, epoch: int):
        self.epoch = epoch
        self.entries: dict[str, tuple[int, int, bytes | None]] = {}

    def dir(self, path: str, mode: int = 0o755, owner: int = 0) -> None:
        self.entries[path.rstrip("/") + "/"] = (mode, owner, None)

    def file(self, path: str, data: bytes, mode: int = 0o644, owner: int = 0) -> None:
        parent = path.rsplit("/", 1)[0]
        if parent and parent + "/" not in self.entries:
            raise Fail(f"layer: {path} added before its directory")
        self.entries[path] = (mode, owner, data)

    def tar(self) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for path in sorted(self.entries):
                mode, owner, data = self.entries[path]
                info = tarfile.TarInfo(path.rstrip("/") if data is None else path)
                info.mtime = self.epoch
                info.mode = mode
                info.uid = info.gid = owner
                info.uname = info.gname = ""
                if data is None:
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                else:
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()


def rootfs(epoch: int, binary: bytes, ca_bundle: bytes, license_text: bytes) -> Layer:
    layer = Layer(epoch)
    for d in ("etc", "etc/ssl", "etc/ssl/certs", "home", "usr", "usr/local", "usr/local/bin",
              "usr/share", "usr/share/doc", "usr/share/doc/runner-fence"):
        layer.dir(d)
    layer.dir("home/nonroot", 0o700, USER)
    layer.dir("tmp", 0o1777)
    layer.file("etc/passwd", (
        "root:x:0:0:root:/root:/sbin/nologin\n"
        f"nonroot:x:{USER}:{USER}:nonroot:/home/nonroot:/sbin/nologin\n").encode())
    layer.file("etc/group", f"root:x:0:\nnonroot:x:{USER}:\n".encode())
    # /etc/hosts first (what the kubelet writes), then DNS.
    layer.file("etc/nsswitch.conf", b"hosts: files dns\n")
    layer.file("etc/ssl/certs/ca-certificates.crt", ca_bundle)
    layer.file("usr/local/bin/runner-fence", binary, 0o755)
    layer.file("usr/share/doc/runner-fence/LICENSE", license_text)
    return layer


class Layout:
    def __init__(self, out: Path):
        self.out = out
        (out / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)

    def blob(self, media_type: str, data: bytes, **extra) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        (self.out / "blobs" / "sha256" / digest).write_bytes(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data), **extra}


def rfc3339(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def read_inputs(args) -> tuple[bytes, bytes]:
    try:
        ca_bundle = Path(args.ca_bundle).read_bytes()
        license_text = Path(args.license).read_bytes()
    except OSError as e:
        raise Fail(f"{e.filename}: {e.strerror}") from e
    if b"BEGIN CERTIFICATE" not in ca_bundle:
        raise Fail(f"{args.ca_bundle}: no PEM certificate in the CA bundle")
    return ca_bundle, license_text


def platform_binary(spec: str) -> tuple[str, dict, bytes]:
    """PLATFORM=PATH -> (platform, its OCI fields, the checked binary)."""
    platform, sep, path = spec.partition("=")
    if not sep or platform not in PLATFORMS:
        raise Fail(f"--binary {spec!r}: expected PLATFORM=PATH with PLATFORM one of {', '.join(PLATFORMS)}")
    p = dict(PLATFORMS[platform])
    check_static_elf(Path(path), p.pop("machine"), platform)
    return platform, p, Path(path).read_bytes()


def layer_only(args) -> None:
    if len(args.binary) != 1:
        raise Fail("layer: exactly one --binary")
    ca_bundle, license_text = read_inputs(args)
    _, _, binary = platform_binary(args.binary[0])
    Path(args.out).write_bytes(rootfs(args.epoch, binary, ca_bundle, license_text).tar())


def build(args) -> None:
    labels = {}
    for kv in args.label:
        key, sep, value = kv.partition("=")
        if not sep or not key:
            raise Fail(f"--label {kv!r}: expected KEY=VALUE")
        labels[key] = value
    labels["org.opencontainers.image.created"] = rfc3339(args.epoch)
    ca_bundle, license_text = read_inputs(args)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise Fail(f"{out}: exists and is not empty (the layout is written afresh)")
    layout = Layout(out)
    created = rfc3339(args.epoch)
    manifests = []
    seen = set()
    for spec in args.binary:
        platform, p, binary = platform_binary(spec)
        if platform in seen:
            raise Fail(f"--binary: {platform} given twice")
        seen.add(platform)
        tar = rootfs(args.epoch, binary, ca_bundle, license_text).tar()
        gz = gzip.compress(tar, compresslevel=9, mtime=0)
        layer = layout.blob(MEDIA["layer"], gz)
        config = {
            "created": created,
            **p,
            "config": {
                "User": f"{USER}:{USER}",
                "Entrypoint": [ENTRYPOINT],
                "Cmd": ["serve"],
                "Env": ["PATH=/usr/local/bin:/usr/bin:/bin",
                        "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],
                "WorkingDir": "/",
                "ExposedPorts": {"8443/tcp": {}, "8080/tcp": {}},
                "Labels": labels,
            },
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(tar).hexdigest()}"]},
            "history": [{"created": created, "created_by": "scripts/release/oci_image.py (static binary, no base image)"}],
        }
        cfg = layout.blob(MEDIA["config"], canonical(config))
        manifest = {"schemaVersion": 2, "mediaType": MEDIA["manifest"], "config": cfg,
                    "layers": [layer], "annotations": labels}
        manifests.append(layout.blob(MEDIA["manifest"], canonical(manifest), platform=p))
    if not manifests:
        raise Fail("no --binary given")
    index = {"schemaVersion": 2, "mediaType": MEDIA["index"], "manifests": manifests, "annotations": labels}
    top = layout.blob(MEDIA["index"], canonical(index),
                      annotations={"org.opencontainers.image.ref.name": args.tag})
    (out / "oci-layout").write_bytes(canonical({"imageLayoutVersion": "1.0.0"}))
    (out / "index.json").write_bytes(canonical({"schemaVersion": 2, "mediaType": MEDIA["index"], "manifests": [top]}))
    print(top["digest"])


def digest(args) -> None:
    try:
        index = json.loads((Path(args.dir) / "index.json").read_text())
    except (OSError, ValueError) as e:
        raise Fail(f"{args.dir}/index.json: {e}") from e
    for m in index.get("manifests", []):
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == args.tag:
            print(m["digest"])
            return
    raise Fail(f"{args.dir}: no image tagged {args.tag}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--out", required=True)
    b.add_argument("--tag", required=True)
    b.add_argument("--epoch", type=int, default=int(os.environ.get("SOURCE_DATE_EPOCH", "0") or 0))
    b.add_argument("--ca-bundle", required=True)
    b.add_argument("--license", required=True)
    b.add_argument("--label", action="append", default=[])
    b.add_argument("--binary", action="append", default=[])
    d = sub.add_parser("digest")
    d.add_argument("dir")
    d.add_argument("tag")
    la = sub.add_parser("layer")
    la.add_argument("--out", required=True)
    la.add_argument("--epoch", type=int, default=int(os.environ.get("SOURCE_DATE_EPOCH", "0") or 0))
    la.add_argument("--ca-bundle", required=True)
    la.add_argument("--license", required=True)
    la.add_argument("--binary", action="append", default=[])
    args = ap.parse_args()
    try:
        {"build": build, "digest": digest, "layer": layer_only}[args.cmd](args)
    except Fail as e:
        print(f"oci_image.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
