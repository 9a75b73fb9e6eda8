#!/usr/bin/env python3
"""Structural checks of the release pipeline (.gitlab-ci.yml) beyond GitLab's CI schema.

    check_release_pipeline.py .gitlab-ci.yml

- it runs on version tags only;
- the build job runs scripts/release/build-image.sh (the script CI runs here through
  scripts/release/check-image.sh) for linux/amd64 and linux/arm64, and writes the notes with
  scripts/release/notes.sh; publish runs scripts/release/push.sh;
- signing is keyless (id_tokens with audience sigstore), signs the index recursively, attests
  an SBOM per built platform, signs the chart and the checksums; verify uses the identity
  README documents;
- every `needs` names an earlier job, every script path exists, every job's shell parses
  (sh -n), and every variable a job reads is GitLab's, the file's own, or written by
  build-image.sh (image.env) or push.sh (published.env) as dotenv reports.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
KEYWORDS = {"workflow", "stages", "variables", "default", "include"}
# Predefined variables the jobs read, and the ones they set themselves in their scripts.
GITLAB = {"CI_COMMIT_TAG", "CI_PROJECT_DIR", "CI_API_V4_URL", "CI_PROJECT_ID", "CI_REGISTRY",
          "CI_REGISTRY_IMAGE", "CI_REGISTRY_USER", "CI_REGISTRY_PASSWORD", "CI_JOB_TOKEN",
          "CI_PROJECT_URL", "CI_SERVER_URL", "SIGSTORE_ID_TOKEN", "CARGO_REGISTRY_TOKEN"}
errors: list[str] = []


def fail(msg: str) -> None:
    errors.append(msg)


def script_text(job: dict) -> str:
    lines = []
    for key in ("before_script", "script", "after_script"):
        v = job.get(key, [])
        lines.extend(v if isinstance(v, list) else [v])
    return "\n".join(str(x) for x in lines)


def main() -> int:
    path = Path(sys.argv[1])
    ci = yaml.safe_load(path.read_text())
    jobs = {k: v for k, v in ci.items() if k not in KEYWORDS and not k.startswith(".")}
    templates = {k: v for k, v in ci.items() if k.startswith(".")}
    stages = ci.get("stages", [])

    rules = ci.get("workflow", {}).get("rules", [])
    if [r.get("if") for r in rules] != ["$CI_COMMIT_TAG =~ /^v[0-9]+\\.[0-9]+\\.[0-9]+$/"]:
        fail(f"workflow: expected to run on vX.Y.Z tags only, got {rules}")

    for name in ("crate", "build", "publish", "sign", "verify", "upload", "release"):
        if name not in jobs:
            fail(f"no job {name!r}")
    if errors:
        return report()

    build = script_text(jobs["build"])
    if "bash scripts/release/build-image.sh target/dist" not in build:
        fail("build: does not run scripts/release/build-image.sh target/dist")
    platforms = str(jobs["build"].get("variables", {}).get("PLATFORMS", "")).split()
    if sorted(platforms) != ["linux/amd64", "linux/arm64"]:
        fail(f"build: PLATFORMS is {platforms}, expected linux/amd64 and linux/arm64")
    if 'scripts/release/notes.sh "$VERSION" > target/dist/release-notes.md' not in build:
        fail("build: release notes are not written by scripts/release/notes.sh")
    if "qemu-aarch64-static" not in build:
        fail("build: the arm64 binary is never started")
    check_image = (ROOT / "scripts/release/check-image.sh").read_text()
    if "bash scripts/release/build-image.sh" not in check_image:
        fail("scripts/release/check-image.sh (CI here) does not run build-image.sh: not the pipeline's script")
    if "scripts/release/check-image.sh" not in (ROOT / ".ci/run").read_text():
        fail(".ci/run does not run scripts/release/check-image.sh")
    if 'bash scripts/release/push.sh target/dist "$CI_REGISTRY_IMAGE"' not in script_text(jobs["publish"]):
        fail("publish: does not run scripts/release/push.sh with $CI_REGISTRY_IMAGE")
    if "cargo package --locked" not in script_text(jobs["crate"]):
        fail("crate: does not run cargo package --locked")

    sign = jobs["sign"]
    if sign.get("id_tokens", {}).get("SIGSTORE_ID_TOKEN", {}).get("aud") != "sigstore":
        fail("sign: no id_tokens SIGSTORE_ID_TOKEN with aud sigstore (keyless signing)")
    s = script_text(sign)
    if 'cosign sign --recursive "$CI_REGISTRY_IMAGE@$IMAGE_DIGEST"' not in s:
        fail("sign: the image index is not signed recursively by digest")
    for p in platforms:
        arch = p.split("/")[1]
        want = (f'cosign attest --type cyclonedx --predicate "target/dist/runner-fence-$VERSION-linux-{arch}.cdx.json" '
                f'"$CI_REGISTRY_IMAGE@$DIGEST_linux_{arch}"')
        if want not in s:
            fail(f"sign: no SBOM attestation for {p}")
    if '"$CI_REGISTRY_IMAGE/charts/runner-fence@$RUNNER_FENCE_CHART_DIGEST"' not in s:
        fail("sign: the chart is not signed by digest")
    if "cosign sign-blob" not in s:
        fail("sign: SHA256SUMS is not signed")
    v = script_text(jobs["verify"])
    if 'IDENTITY="$CI_PROJECT_URL//.gitlab-ci.yml@refs/tags/$CI_COMMIT_TAG"' not in v:
        fail("verify: not the identity README documents")

    # README's verification command names what verify checks, for this version.
    version = re.search(r'^version = "([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M).group(1)
    readme = (ROOT / "README.md").read_text()
    identity = f"https://gitlab.com/runner-fence/runner-fence//.gitlab-ci.yml@refs/tags/v{version}"
    for needle in (identity, "--certificate-oidc-issuer https://gitlab.com",
                   f"registry.gitlab.com/runner-fence/runner-fence:{version}",
                   "oci://registry.gitlab.com/runner-fence/runner-fence/charts/runner-fence"):
        if needle not in readme:
            fail(f"README.md does not mention {needle}")

    release = jobs["release"].get("release", {})
    if release.get("description") != "./target/dist/release-notes.md" or release.get("tag_name") != "$CI_COMMIT_TAG":
        fail(f"release: description/tag_name are {release.get('description')}/{release.get('tag_name')}")
    links = [link["url"] for link in release.get("assets", {}).get("links", [])]
    for p in platforms:
        arch = p.split("/")[1]
        for f in (f"runner-fence-$VERSION-linux-{arch}", f"runner-fence-$VERSION-linux-{arch}.cdx.json"):
            if f"$PACKAGE_URL/{f}" not in links:
                fail(f"release: no asset link to {f}")
    for f in ("SHA256SUMS", "SHA256SUMS.cosign.bundle"):
        if f"$PACKAGE_URL/{f}" not in links:
            fail(f"release: no asset link to {f}")

    # Variables: GitLab's, the file's, the jobs' own, or dotenv reports of the scripts.
    defined = set(GITLAB) | set(ci.get("variables", {}))
    image_env = (ROOT / "scripts/release/build-image.sh").read_text()
    defined |= set(re.findall(r'echo "([A-Z_]+)=', image_env))
    defined |= {f"DIGEST_linux_{p.split('/')[1]}" for p in platforms}
    defined |= set(re.findall(r'echo "(RUNNER_FENCE_[A-Z_]+)=', (ROOT / "scripts/release/push.sh").read_text()))
    order = {}
    for name, job in jobs.items():
        for t in ([job["extends"]] if isinstance(job.get("extends"), str) else job.get("extends", [])):
            if t not in templates:
                fail(f"{name}: extends unknown {t}")
        stage = job.get("stage")
        if stage not in stages:
            fail(f"{name}: stage {stage!r} is not in stages")
            continue
        order[name] = stages.index(stage)
    def reaches(start: str, goal: str, seen: set) -> bool:
        for need in jobs.get(start, {}).get("needs", []):
            if need == goal or (need not in seen and reaches(need, goal, seen | {need})):
                return True
        return False
    for name in jobs:
        if reaches(name, name, set()):
            fail(f"{name}: its needs form a cycle")
    for name, job in jobs.items():
        for need in job.get("needs", []):
            if need not in order:
                fail(f"{name}: needs unknown job {need!r}")
            elif order[need] > order.get(name, 0):
                fail(f"{name}: needs {need!r} of a later stage")
        text = script_text(job)
        local = set(re.findall(r"(?:^|[\s;(])(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=", text, re.M))
        local |= set(re.findall(r"\bfor\s+([A-Za-z_]+)\s+in\b", text))
        local |= set(job.get("variables", {}))
        if ". target/dist/image.env" in text:
            local |= defined
        used = set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", yaml.safe_dump(job)))
        for var in sorted(used - defined - local):
            fail(f"{name}: reads ${var}, which nothing defines")
        for ref in re.findall(r"\bscripts/[A-Za-z0-9_./-]+", text):
            if not (ROOT / ref).is_file():
                fail(f"{name}: {ref} does not exist")
        r = subprocess.run(["sh", "-n"], input=text, text=True, capture_output=True)
        if r.returncode != 0:
            fail(f"{name}: its shell does not parse: {r.stderr.strip()}")
    return report()


def report() -> int:
    if errors:
        for e in errors:
            print(f"FAIL: .gitlab-ci.yml: {e}", file=sys.stderr)
        return 1
    print("release pipeline: structure, scripts, variables and README identity checked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
