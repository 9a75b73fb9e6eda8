#!/usr/bin/env python3
"""Checks of the GitLab CI template ci/gitlab/runner-fence.gitlab-ci.yml (driven by
scripts/check-ci-template.sh).

  split TEMPLATE OUTDIR             one JSON file per YAML document (for check-jsonschema,
                                    which reads one document per file)
  render TEMPLATE OUT [k=v ...]     the job document after `spec:inputs` interpolation, as
                                    GitLab would include it with these inputs (JSON)
  xsd-selftest XSD                  the JUnit XSD accepts and rejects reference documents
  jobs TEMPLATE RUNNER_FENCE XSD WORKDIR
                                    runs the job's before_script and script, as GitLab
                                    Runner would, in several scenarios, and checks exit
                                    codes, output and the JUnit reports against the XSD

Exits non-zero with a message on the first problem.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import NoReturn

import xmlschema
import yaml

REPO = Path(__file__).resolve().parent.parent
INTERPOLATION = re.compile(r"\$\[\[\s*inputs\.([A-Za-z0-9_-]+)\s*\]\]")
ANY_INTERPOLATION = re.compile(r"\$\[\[.*?\]\]")
# Top-level keys that are not jobs (GitLab's global keywords).
GLOBAL_KEYS = {
    "default", "include", "stages", "variables", "workflow", "image", "services",
    "cache", "before_script", "after_script", "spec",
}


class CheckError(Exception):
    pass


def fail(msg: str) -> NoReturn:
    raise CheckError(msg)


def load_documents(template: Path) -> list:
    docs = list(yaml.safe_load_all(template.read_text()))
    if any(d is None for d in docs):
        fail(f"{template}: empty YAML document")
    return docs


def header_and_content(template: Path) -> tuple[dict, dict]:
    docs = load_documents(template)
    if len(docs) == 1:
        return {}, docs[0]
    if len(docs) != 2 or set(docs[0]) != {"spec"}:
        fail(f"{template}: expected a `spec:` header document, `---`, then the configuration")
    return docs[0]["spec"], docs[1]


def resolve_inputs(spec: dict, given: dict[str, str]) -> dict:
    """Values of the inputs as GitLab resolves them: given, else default; options checked."""
    declared = spec.get("inputs") or {}
    unknown = set(given) - set(declared)
    if unknown:
        fail(f"unknown inputs {sorted(unknown)} (declared: {sorted(declared)})")
    values = {}
    for name, decl in declared.items():
        decl = decl or {}
        # GitLab's schema lets unknown keys of an input through; GitLab itself does not.
        odd = set(decl) - {"type", "description", "default", "options", "regex", "rules"}
        if odd:
            fail(f"input {name!r}: unknown keys {sorted(odd)}")
        kind = decl.get("type", "string")
        if name in given:
            raw = given[name]
            value = {"boolean": lambda s: s == "true", "number": float}.get(kind, str)(raw)
        elif "default" in decl:
            value = decl["default"]
        else:
            fail(f"input {name!r} has no default and was not given")
        if "options" in decl and value not in decl["options"]:
            fail(f"input {name!r}: {value!r} is not one of {decl['options']}")
        if kind == "string" and not isinstance(value, str):
            fail(f"input {name!r} is a string input but its value {value!r} is not a string")
        if "description" not in decl:
            fail(f"input {name!r} has no description")
        values[name] = value
    return values


def interpolate(node, values: dict):
    """GitLab's `$[[ inputs.x ]]` interpolation over keys and values. A string that is
    exactly one interpolation takes the input's value with its type; otherwise the
    value is spliced into the string."""
    if isinstance(node, dict):
        return {interpolate(k, values): interpolate(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, values) for v in node]
    if not isinstance(node, str):
        return node

    def value_of(m: re.Match) -> object:
        if m.group(1) not in values:
            fail(f"interpolation of an undeclared input: {m.group(0)}")
        return values[m.group(1)]

    whole = INTERPOLATION.fullmatch(node.strip())
    if whole:
        return value_of(whole)
    out = INTERPOLATION.sub(
        lambda m: str(value_of(m)).lower() if isinstance(value_of(m), bool) else str(value_of(m)),
        node,
    )
    left = ANY_INTERPOLATION.search(out)
    if left:
        fail(f"interpolation this check does not understand: {left.group(0)!r} in {node!r}")
    return out


def render(template: Path, given: dict[str, str]) -> dict:
    spec, content = header_and_content(template)
    return interpolate(content, resolve_inputs(spec, given))


def the_job(config: dict) -> tuple[str, dict]:
    jobs = {k: v for k, v in config.items() if k not in GLOBAL_KEYS and not k.startswith(".")}
    if len(jobs) != 1:
        fail(f"expected exactly one job in the template, found {sorted(jobs)}")
    (name, job), = jobs.items()
    for key in ("extends", "after_script"):
        if key in job:
            fail(f"job {name}: `{key}` is not supported by this check; extend it")
    return name, job


def lines(job: dict, key: str) -> list[str]:
    value = job.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not all(isinstance(v, str) for v in value):
        fail(f"{key}: nested script arrays are not supported by this check")
    return value


def job_shell_script(job: dict) -> str:
    # What GitLab Runner's shell writer does for bash and sh: pipefail when the shell
    # has it, errexit, then before_script and script in one shell.
    preamble = "if set -o | grep pipefail >/dev/null; then set -o pipefail; fi; set -o errexit\n"
    body = []
    for line in lines(job, "before_script") + lines(job, "script"):
        body.append(f"printf '%s\\n' {shlex_quote('$ ' + line.splitlines()[0])}")
        body.append(line)
    return preamble + "\n".join(body) + "\n"


def shlex_quote(s: str) -> str:
    return "'" + s.replace("'", "'\"'\"'") + "'"


# ---------------------------------------------------------------------------------
# JUnit


def junit_cases(path: Path) -> list[dict]:
    """Testcases the way GitLab's parser walks them (all testcases under the top-level
    testsuites/testsuite, any nesting), with GitLab's status precedence."""
    root = ET.parse(path).getroot()
    out = []

    def walk(node: ET.Element, suite: str | None) -> None:
        for child in node:
            if child.tag == "testsuite":
                walk(child, child.get("name"))
            elif child.tag == "testcase":
                status = "success"
                for tag, st in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
                    if child.find(tag) is not None:
                        status = st
                        break
                text = "".join(e.text or "" for e in child if e.tag in ("failure", "error"))
                out.append({"suite": suite, "name": child.get("name"), "status": status, "text": text})

    if root.tag == "testsuite":
        wrapper = ET.Element("wrapper")
        wrapper.append(root)
        walk(wrapper, None)
    else:
        walk(root, None)
    return out


def check_junit(path: Path, schema: xmlschema.XMLSchema, passed: int, failed: int) -> list[dict]:
    if not path.is_file():
        fail(f"no JUnit report at {path}")
    errors = list(schema.iter_errors(str(path)))
    if errors:
        detail = "\n".join(f"  {e.path}: {e.reason}" for e in errors[:10])
        fail(f"{path} does not validate against {schema.url}:\n{detail}")
    cases = junit_cases(path)
    got_failed = sum(1 for c in cases if c["status"] != "success")
    if (len(cases) - got_failed, got_failed) != (passed, failed):
        fail(
            f"{path}: GitLab would count {len(cases) - got_failed} passed and {got_failed} "
            f"failed, the command printed {passed} passed, {failed} failed"
        )
    root = ET.parse(path).getroot()
    if root.tag == "testsuites" and root.get("tests") not in (None, str(len(cases))):
        fail(f"{path}: testsuites tests={root.get('tests')} but it holds {len(cases)} testcases")
    return cases


# Documents the XSD must accept and reject, so that a schema that accepts anything
# cannot pass for a check.
XSD_ACCEPTS = {
    "nested suites, every outcome, file and time": """<testsuites name="all" tests="4">
  <testsuite name="outer"><testsuite name="inner">
    <testcase name="ok" classname="c" file="a.test.yaml" time="0.25"/>
    <testcase name="bad"><failure message="m">text</failure><system-out>[[ATTACHMENT|x.png]]</system-out></testcase>
    <testcase name="broken"><error>boom</error></testcase>
    <testcase name="later"><skipped/></testcase>
  </testsuite></testsuite>
</testsuites>""",
    "a testsuite as the document element": '<testsuite name="s"><testcase name="t"/></testsuite>',
}
XSD_REJECTS = {
    "a failure without text (GitLab would show a Ruby Hash)":
        '<testsuites><testsuite name="s"><testcase name="t"><failure message="m"/></testcase></testsuite></testsuites>',
    "a failure with blank text":
        '<testsuites><testsuite name="s"><testcase name="t"><failure message="m">  \n </failure></testcase></testsuite></testsuites>',
    "a testcase without a name":
        '<testsuites><testsuite name="s"><testcase classname="c"/></testsuite></testsuites>',
    "a Surefire-style time that GitLab reads as 1.0":
        '<testsuites><testsuite name="s"><testcase name="t" time="1,234.5"/></testsuite></testsuites>',
    "a testcase outside any suite as the document element": '<testcase name="t"/>',
    "an unknown element": '<testsuites><testsuite name="s"><test name="t"/></testsuite></testsuites>',
    "a negative count": '<testsuites tests="-1"/>',
}


def xsd_selftest(xsd: Path) -> None:
    schema = xmlschema.XMLSchema(str(xsd))
    for what, doc in XSD_ACCEPTS.items():
        errors = list(schema.iter_errors(doc))
        if errors:
            fail(f"{xsd} rejects {what}: {errors[0].reason}")
    for what, doc in XSD_REJECTS.items():
        if schema.is_valid(doc):
            fail(f"{xsd} accepts {what}")
    print(f"{xsd}: accepts {len(XSD_ACCEPTS)} and rejects {len(XSD_REJECTS)} reference documents")


# ---------------------------------------------------------------------------------
# Running the job


# The platform the template's job asks crane for on this machine (uname -m, as the job does).
PLATFORM = "linux/arm64" if os.uname().machine in ("aarch64", "arm64") else "linux/amd64"

FAKE_CRANE = """#!/bin/sh
# Stands in for crane in gcr.io/go-containerregistry/crane:debug: records its calls,
# and `export --platform linux/ARCH IMAGE -` writes a tarball of a prepared root filesystem,
# as crane export writes the flattened filesystem of the image's platform.
log="$FAKE_CRANE_LOG"
echo "crane $*" >> "$log"
if [ -n "${DOCKER_CONFIG:-}" ] && [ -f "$DOCKER_CONFIG/config.json" ]; then
  echo "config.json: $(cat "$DOCKER_CONFIG/config.json")" >> "$log"
fi
case "$1" in
  export)
    # The image is multi-arch: without --platform crane would take linux/amd64 anywhere.
    case "$2 $3" in
      "--platform linux/amd64" | "--platform linux/arm64") shift 2 ;;
      *) echo "fake crane: expected export --platform linux/amd64|linux/arm64 IMAGE -" >&2; exit 1 ;;
    esac
    [ "$3" = "-" ] || { echo "fake crane: expected export --platform P IMAGE -" >&2; exit 1; }
    if [ "$2" != "$FAKE_CRANE_IMAGE" ]; then
      echo "fake crane: MANIFEST_UNKNOWN: $2" >&2; exit 1
    fi
    cd "$FAKE_CRANE_ROOTFS" && tar -c -f - . ;;
  auth)
    [ "$2" = "login" ] || exit 1
    echo "password from stdin: $(cat)" >> "$log" ;;
  *) echo "fake crane: unexpected $*" >&2; exit 1 ;;
esac
"""


def passed_failed(output: str) -> tuple[int, int] | None:
    m = re.search(r"^(\d+) passed, (\d+) failed$", output, re.M)
    return (int(m.group(1)), int(m.group(2))) if m else None


class Jobs:
    def __init__(self, template: Path, binary: Path, xsd: Path, work: Path):
        self.template = template
        self.binary = binary
        try:
            self.schema = xmlschema.XMLSchema(str(xsd))
        except (xmlschema.XMLSchemaException, OSError) as e:
            fail(f"{xsd}: not a usable XML schema: {e}")
        self.work = work
        bash = shutil.which("bash")
        if not bash:
            fail("no bash to run the job with")
        self.system_path = self.clean_system_path()
        # POSIX sh: busybox when there is one ($BUSYBOX or on PATH), with nothing but its
        # applets on PATH, as in the default image; else dash (or sh) with the system PATH.
        busybox = os.environ.get("BUSYBOX") or shutil.which("busybox")
        if busybox:
            applets = work / "busybox-applets"
            applets.mkdir(parents=True)
            listed = subprocess.run([busybox, "--list"], check=True, capture_output=True, text=True)
            for applet in listed.stdout.split():
                (applets / applet).symlink_to(busybox)
            self.shells = {"bash": ([bash], self.system_path), "sh": ([busybox, "sh"], str(applets))}
        else:
            sh = shutil.which("dash") or shutil.which("sh")
            if not sh:
                fail("no POSIX sh to run the job with")
            self.shells = {"bash": ([bash], self.system_path), "sh": ([sh], self.system_path)}
        print(f"POSIX sh for the job: {' '.join(self.shells['sh'][0])}", flush=True)

    def clean_system_path(self) -> str:
        """The usual system directories, none of which may hold a runner-fence that would
        hide whether the job found the one it was meant to."""
        dirs = [d for d in ("/usr/local/bin", "/usr/bin", "/bin") if os.path.isdir(d)]
        for d in dirs:
            if os.path.exists(os.path.join(d, "runner-fence")):
                fail(f"{d}/runner-fence exists; the job checks need a PATH without it")
        return ":".join(dirs)

    def project(self, name: str) -> Path:
        """A policy project laid out as the template's defaults expect:
        policy/policy.yaml and policy/tests/ (copies of examples/)."""
        proj = self.work / name
        (proj / "policy").mkdir(parents=True)
        shutil.copy(REPO / "examples" / "policy.yaml", proj / "policy" / "policy.yaml")
        shutil.copytree(REPO / "examples" / "tests", proj / "policy" / "tests")
        return proj

    def run(self, title: str, *, inputs: dict[str, str], cwd: Path, shell: str,
            binary_on_path: bool, expect_exit: int | str, extra_env: dict[str, str] | None = None,
            crane_image: str | None = None) -> tuple[str, Path]:
        print(f"-- job: {title} ({' '.join(self.shells[shell][0])}, inputs {inputs or 'defaults'})", flush=True)
        config = render(self.template, inputs)
        job_name, job = the_job(config)
        run_dir = self.work / f"run-{re.sub(r'[^a-z0-9]+', '-', title.lower()).strip('-')}"
        bindir = run_dir / "bin"
        bindir.mkdir(parents=True)
        crane_log = run_dir / "crane.log"
        crane_log.touch()
        if binary_on_path:
            (bindir / "runner-fence").symlink_to(self.binary)
        else:
            rootfs = run_dir / "image-rootfs"
            (rootfs / "usr" / "local" / "bin").mkdir(parents=True)
            (rootfs / "etc").mkdir()
            (rootfs / "etc" / "passwd").write_text("nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
            shutil.copy(self.binary, rootfs / "usr" / "local" / "bin" / "runner-fence")
            crane = bindir / "crane"
            crane.write_text(FAKE_CRANE)
            crane.chmod(crane.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        script = run_dir / "job.sh"
        script.write_text(job_shell_script(job))
        variables = job.get("variables") or {}
        env = {
            "PATH": f"{bindir}:{self.shells[shell][1]}",
            "HOME": str(run_dir),
            "TMPDIR": str(run_dir),
            "LANG": "C.UTF-8",
            "CI": "true",
            "GITLAB_CI": "true",
            "CI_PROJECT_DIR": str(cwd),
            "CI_JOB_NAME": job_name,
            "FAKE_CRANE_LOG": str(crane_log),
            "FAKE_CRANE_ROOTFS": str(run_dir / "image-rootfs"),
            "FAKE_CRANE_IMAGE": crane_image or "",
        }
        for k, v in variables.items():
            if isinstance(v, dict):
                v = v.get("value", "")
            env[k] = str(v).lower() if isinstance(v, bool) else str(v)
        env.update(extra_env or {})
        proc = subprocess.run(
            [*self.shells[shell][0], str(script)], cwd=cwd, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
        )
        output = proc.stdout
        print("\n".join("   | " + line for line in output.rstrip("\n").splitlines()), flush=True)
        if proc.returncode != expect_exit and not (expect_exit == "non-zero" and proc.returncode != 0):
            fail(f"job {title!r}: exit code {proc.returncode}, expected {expect_exit}")
        junit = Path(env["RUNNER_FENCE_JUNIT"])
        if not junit.is_absolute():
            junit = cwd / junit
        return output + "\n" + crane_log.read_text(), junit

    def report(self, title: str, output: str, junit: Path) -> list[dict]:
        counts = passed_failed(output)
        if counts is None:
            fail(f"job {title!r}: no 'N passed, N failed' line in its output")
        cases = check_junit(junit, self.schema, *counts)
        print(f"   JUnit {junit.name}: valid, {len(cases)} testcases, {counts[1]} failed", flush=True)
        return cases


def expect_in(title: str, text: str, *needles: str) -> None:
    for n in needles:
        if n not in text:
            fail(f"job {title!r}: expected {n!r} in its output or crane's calls")


def expect_not_in(title: str, text: str, *needles: str) -> None:
    for n in needles:
        if n in text:
            fail(f"job {title!r}: did not expect {n!r} in its output or crane's calls")


PLAIN = "plain job pod is placed on runner nodes with default requests"
ODD = 'odd <name> & "quotes" \'apostrophe\' \u00e9\u2713\ttab'


def attr_normalized(s: str) -> str:
    return re.sub(r"[\t\n\r]", " ", s)


def break_suite(proj: Path) -> None:
    """Breaks the copied example suite: one wrong expectation, and one more case whose
    name and expected message carry XML special characters and non-ASCII text."""
    path = proj / "policy" / "tests" / "reference-policy.test.yaml"
    suite = yaml.safe_load(path.read_text())
    first = suite["cases"][0]
    if first["name"] != PLAIN or first["expect"].get("allowed") is not True:
        fail(f"{path}: the first case is no longer {PLAIN!r} with allowed: true; adapt break_suite")
    first["expect"]["allowed"] = False
    odd = dict(suite["cases"][1])
    odd["name"] = ODD
    odd["expect"] = {"messages": ['no such <message> & "never" ]]> here']}
    suite["cases"].append(odd)
    path.write_text(yaml.safe_dump(suite, sort_keys=False, allow_unicode=True))


def jobs(template: Path, binary: Path, xsd: Path, work: Path) -> None:
    j = Jobs(template, binary, xsd, work)
    default_image = resolve_inputs(header_and_content(template)[0], {})["runner-fence-image"]

    # 1. This repository's example policy and tests, runner-fence already on PATH.
    t = "examples with runner-fence on PATH"
    out, junit = j.run(t, inputs={"policy": "examples/policy.yaml", "tests": "examples/tests",
                                  "junit": str(work / "examples-junit.xml")},
                       cwd=REPO, shell="bash", binary_on_path=True, expect_exit=0)
    expect_in(t, out, "runner-fence from the job image", "examples/policy.yaml: ok", "0 failed")
    expect_not_in(t, out, "crane ")
    cases = j.report(t, out, junit)
    if not cases or any(c["status"] != "success" for c in cases):
        fail(f"{t}: expected only passing testcases")

    # 2. The defaults (policy/policy.yaml, policy/tests), in the default image's way:
    #    runner-fence copied out of the runner-fence image with crane, POSIX sh.
    t = "defaults with the binary from the image"
    proj = j.project("defaults")
    out, junit = j.run(t, inputs={}, cwd=proj, shell="sh", binary_on_path=False,
                       expect_exit=0, crane_image=default_image)
    expect_in(t, out, f"crane export --platform {PLATFORM} {default_image} -", "runner-fence 0.", "policy/policy.yaml: ok")
    expect_not_in(t, out, "crane auth", "config.json")
    if junit != proj / "runner-fence-junit.xml":
        fail(f"{t}: report at {junit}, expected the default runner-fence-junit.xml")
    j.report(t, out, junit)

    # 3. An image in the project's GitLab registry: crane logs in with the job token.
    t = "registry login with the job token"
    image = "registry.example.com/platform/runner-fence:0.1.0"
    out, junit = j.run(t, inputs={"runner-fence-image": image}, cwd=j.project("registry"),
                       shell="sh", binary_on_path=False, expect_exit=0, crane_image=image,
                       extra_env={"CI_REGISTRY": "registry.example.com",
                                  "CI_REGISTRY_USER": "gitlab-ci-token",
                                  "CI_REGISTRY_PASSWORD": "job-token-value"})
    expect_in(t, out, "crane auth login registry.example.com -u gitlab-ci-token --password-stdin",
              "password from stdin: job-token-value", f"crane export --platform {PLATFORM} {image} -")
    j.report(t, out, junit)

    # 4. Another private registry: DOCKER_AUTH_CONFIG becomes crane's config.json.
    t = "DOCKER_AUTH_CONFIG for another registry"
    image = "registry.internal.example:5000/runner-fence:0.1.0"
    auth = '{"auths":{"registry.internal.example:5000":{"auth":"dXNlcjpwYXNz"}}}'
    out, junit = j.run(t, inputs={"runner-fence-image": image}, cwd=j.project("docker-auth"),
                       shell="sh", binary_on_path=False, expect_exit=0, crane_image=image,
                       extra_env={"DOCKER_AUTH_CONFIG": auth, "CI_REGISTRY": "registry.example.com"})
    expect_in(t, out, f"config.json: {auth}", f"crane export --platform {PLATFORM} {image} -")
    expect_not_in(t, out, "crane auth")
    j.report(t, out, junit)

    # 4b. An image crane cannot read: the job stops there, with crane's error.
    t = "unreadable runner-fence image"
    proj = j.project("no-image")
    out, junit = j.run(t, inputs={"runner-fence-image": "registry.example.com/platform/runner-fence:9.9.9"},
                       cwd=proj, shell="sh", binary_on_path=False, expect_exit="non-zero",
                       crane_image=default_image)
    expect_in(t, out, "MANIFEST_UNKNOWN: registry.example.com/platform/runner-fence:9.9.9")
    expect_not_in(t, out, "$ runner-fence test")
    if junit.exists():
        fail(f"{t}: a JUnit report was written although runner-fence never ran")

    # 5. A suite with failures: the job fails (exit code 1) and the report, which GitLab
    #    reads after a failure too (artifacts:when: always), says which and why.
    t = "failing suite"
    proj = j.project("failing")
    break_suite(proj)
    out, junit = j.run(t, inputs={}, cwd=proj, shell="bash", binary_on_path=True, expect_exit=1)
    cases = j.report(t, out, junit)
    # Names travel in attributes, where XML parsers (GitLab's Nokogiri included) turn a
    # literal tab or newline into a space: compare names with that normalization.
    failed = {attr_normalized(c["name"]): c["text"] for c in cases if c["status"] == "failed"}
    if sorted(failed) != sorted([PLAIN, attr_normalized(ODD)]):
        fail(f"{t}: expected <failure> for exactly {[PLAIN, ODD]} in {junit}, got {sorted(failed)}")
    if "allowed: expected false, got true" not in failed[PLAIN]:
        fail(f"{t}: the failure text of the broken expectation does not say what differed")
    # The text quotes the expected fragment as Rust's {:?} does (\" for ").
    if 'no such <message> & \\"never\\" ]]> here' not in failed[attr_normalized(ODD)]:
        fail(f"{t}: the failure text lost the special characters of the expected message")
    if "<failure" not in junit.read_text():
        fail(f"{t}: {junit} has no <failure> element")
    shutil.copy(junit, work / "failing-junit.xml")

    # 6. A suite that does not load: exit code 2, reported as a failed testcase.
    t = "suite that does not load"
    proj = j.project("broken")
    (proj / "policy" / "tests" / "broken.test.yaml").write_text(
        "apiVersion: runner-fence.dev/v1alpha1\nkind: SomethingElse\ncases: []\n"
    )
    out, junit = j.run(t, inputs={}, cwd=proj, shell="bash", binary_on_path=True, expect_exit=2)
    cases = j.report(t, out, junit)
    broken = [c for c in cases if c["status"] == "failed"]
    if [c["name"] for c in broken] != ["load suite"] or "expected apiVersion" not in broken[0]["text"]:
        fail(f"{t}: expected one failed 'load suite' testcase saying why, got {broken}")

    # 7, 8. Lint warnings: printed but not failing by default; failing with strict-lint.
    for strict, code in (("false", 0), ("true", 1)):
        t = f"lint warning with strict-lint {strict}"
        proj = j.project(f"lint-{strict}")
        policy = proj / "policy" / "policy.yaml"
        text = policy.read_text()
        if "namespaces: [gitlab-runner]" not in text:
            fail(f"{policy}: no `namespaces: [gitlab-runner]` to add a lint warning to")
        # Matching the webhook's own namespace is legal but draws a lint warning.
        policy.write_text(text.replace("namespaces: [gitlab-runner]", "namespaces: [gitlab-runner, runner-fence]", 1))
        out, junit = j.run(t, inputs={"strict-lint": strict}, cwd=proj, shell="sh",
                           binary_on_path=True, expect_exit=code)
        expect_in(t, out, "covers runner-fence")
        if strict == "true":
            expect_in(t, out, "runner-fence lint policy/policy.yaml failed (exit code 1, strict-lint: true)")
        j.report(t, out, junit)

    # 9. Policy objects in a GitOps layout (tests/data/policy-repo: a multi-document file of
    #    two valid RunnerFencePolicy objects and a Deployment, other objects beside it, a
    #    hidden directory never read), with the plain policy file, as one space-separated
    #    input: every policy document linted, the set judged as the controller judges it.
    t = "policy objects in a repository"
    proj = j.project("gitops")
    shutil.copytree(REPO / "tests" / "data" / "policy-repo", proj / "gitops")
    teams = "gitops/clusters/prod/runner-fence/policies.yaml"
    if "kind: Deployment" not in (proj / teams).read_text():
        fail(f"{teams}: the fixture no longer holds a Deployment beside the policies")
    out, junit = j.run(t, inputs={"policy": "gitops policy/policy.yaml"}, cwd=proj, shell="sh",
                       binary_on_path=True, expect_exit=0)
    expect_in(t, out, f"{teams}:1: RunnerFencePolicy team-a: ok", f"{teams}:3: RunnerFencePolicy team-b: ok",
              "policy/policy.yaml:1: RunnerPolicy gitlab-runner-jobs: ok",
              "3 policy document(s): 3 ok, 0 with warnings, 0 broken")
    expect_not_in(t, out, "not-linted", "Deployment", "error:")
    j.report(t, out, junit)

    # 10. Two objects claiming one namespace (tests/data/policy-conflict): the later is
    #     reported as the controller's Conflict, and the job fails with exit code 2.
    t = "conflicting policy objects"
    proj = j.project("conflict")
    shutil.copytree(REPO / "tests" / "data" / "policy-conflict", proj / "policies")
    out, junit = j.run(t, inputs={"policy": "policies"}, cwd=proj, shell="sh",
                       binary_on_path=True, expect_exit=2)
    expect_in(t, out, "policies/policies.yaml:1: RunnerFencePolicy team-b: ok",
              'policies/policies.yaml:2: RunnerFencePolicy shared: Conflict: spec.match.namespaces[0]: '
              '"team-b-ci-main" overlaps "team-b-ci-*" of RunnerFencePolicy team-b, which is older and '
              'reviews it; give each namespace to one policy',
              "runner-fence lint policies failed (exit code 2, strict-lint: false)")
    # The tests ran all the same, and their report is there.
    j.report(t, out, junit)
    print("job checks passed")


def main(argv: list[str]) -> int:
    try:
        if len(argv) == 3 and argv[0] == "split":
            out = Path(argv[2])
            out.mkdir(parents=True, exist_ok=True)
            for i, doc in enumerate(load_documents(Path(argv[1]))):
                p = out / f"{Path(argv[1]).name}.doc{i}.json"
                p.write_text(json.dumps(doc, indent=1))
                print(p)
        elif len(argv) >= 3 and argv[0] == "render":
            given = dict(a.split("=", 1) for a in argv[3:])
            Path(argv[2]).write_text(json.dumps(render(Path(argv[1]), given), indent=1))
        elif len(argv) == 2 and argv[0] == "xsd-selftest":
            xsd_selftest(Path(argv[1]))
        elif len(argv) == 5 and argv[0] == "jobs":
            jobs(Path(argv[1]), Path(argv[2]), Path(argv[3]), Path(argv[4]))
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except CheckError as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
