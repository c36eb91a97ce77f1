#!/usr/bin/env python3
"""Validates apko/apko.yaml without apko: the structure apko's config
format allows, and the package list against apko/requirements.yaml.

Usage: apko/validate.py [APKO_YAML [REQUIREMENTS_YAML]]
Exits 0 and prints a summary when valid; prints every problem and exits 1
otherwise.
"""
import os
import re
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))

# Top-level keys of apko's ImageConfiguration (docs/apko_file.md).
TOP_KEYS = {
    "contents", "entrypoint", "cmd", "stop-signal", "work-dir", "accounts",
    "archs", "environment", "paths", "include", "vcs-url", "annotations",
    "os-release", "volumes", "layering",
}
CONTENTS_KEYS = {"repositories", "keyring", "packages", "build_repositories", "runtime_repositories", "baseimage"}
ARCHS = {"x86_64", "amd64", "aarch64", "arm64", "armv7", "armhf", "x86", "386", "ppc64le", "s390x", "riscv64"}
# apk world entries: name, optional @tag, optional version constraint.
PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+._-]*(@[a-z0-9]+)?([<>=~]{1,2}[0-9A-Za-z._+-]+)?$")


def package_name(entry):
    return re.split(r"[<>=~@]", entry, maxsplit=1)[0]


def check_structure(cfg, problems):
    if not isinstance(cfg, dict):
        problems.append("top level must be a mapping")
        return []
    for key in cfg:
        if key not in TOP_KEYS:
            problems.append(f"unknown top-level key {key!r}")
    contents = cfg.get("contents")
    if not isinstance(contents, dict):
        problems.append("contents: required mapping")
        return []
    for key in contents:
        if key not in CONTENTS_KEYS:
            problems.append(f"contents: unknown key {key!r}")
    for key in ("repositories", "keyring"):
        urls = contents.get(key)
        if not isinstance(urls, list) or not urls:
            problems.append(f"contents.{key}: required non-empty list")
            continue
        for u in urls:
            if not isinstance(u, str) or not u.startswith("https://"):
                problems.append(f"contents.{key}: {u!r} is not an https URL")
    for k in contents.get("keyring") or []:
        if isinstance(k, str) and not k.endswith(".pub"):
            problems.append(f"contents.keyring: {k!r} is not a public key (.pub)")
    packages = contents.get("packages")
    if not isinstance(packages, list) or not packages:
        problems.append("contents.packages: required non-empty list")
        return []
    names = []
    for p in packages:
        if not isinstance(p, str) or not PACKAGE.match(p):
            problems.append(f"contents.packages: {p!r} is not an apk package spec")
            continue
        names.append(package_name(p))
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"contents.packages: listed twice: {', '.join(dupes)}")

    archs = cfg.get("archs")
    if not isinstance(archs, list) or not archs:
        problems.append("archs: required non-empty list")
    else:
        for a in archs:
            if a not in ARCHS:
                problems.append(f"archs: unknown architecture {a!r}")
        if not {"x86_64", "amd64"} & set(archs):
            problems.append("archs: Ember nodes are x86_64; it must be listed")

    ep = cfg.get("entrypoint")
    if not isinstance(ep, dict) or not isinstance(ep.get("command"), str):
        problems.append("entrypoint.command: required string")
    elif ep["command"] != "/init":
        problems.append(f"entrypoint.command: PID 1 is /init, not {ep['command']!r}")

    accounts = cfg.get("accounts")
    if accounts is not None:
        if not isinstance(accounts, dict):
            problems.append("accounts: must be a mapping")
        else:
            users = accounts.get("users") or []
            groups = accounts.get("groups") or []
            for u in users:
                if not isinstance(u, dict) or not isinstance(u.get("username"), str) or not isinstance(u.get("uid"), int):
                    problems.append(f"accounts.users: {u!r} needs username and integer uid")
            for g in groups:
                if not isinstance(g, dict) or not isinstance(g.get("groupname"), str) or not isinstance(g.get("gid"), int):
                    problems.append(f"accounts.groups: {g!r} needs groupname and integer gid")
            run_as = accounts.get("run-as")
            known = {str(u.get("uid")) for u in users if isinstance(u, dict)} | {
                u.get("username") for u in users if isinstance(u, dict)}
            if run_as is not None and str(run_as) not in known:
                problems.append(f"accounts.run-as: {run_as!r} is not a declared user")

    env = cfg.get("environment")
    if env is not None and not (isinstance(env, dict) and all(isinstance(v, str) for v in env.values())):
        problems.append("environment: must map names to strings")
    return names


def check_requirements(names, req, problems):
    reqs = req.get("requirements") if isinstance(req, dict) else None
    if not isinstance(reqs, list) or not reqs:
        problems.append("requirements.yaml: requirements must be a non-empty list")
        return
    used = set()
    for r in reqs:
        rid = r.get("id", "?")
        for field in ("id", "need", "source", "any_of"):
            if not r.get(field):
                problems.append(f"requirement {rid}: missing {field}")
        if not str(r.get("source", "")).startswith("https://"):
            problems.append(f"requirement {rid}: source must cite an https URL")
        met = [n for n in r.get("any_of") or [] if n in names]
        if not met:
            problems.append(f"requirement {rid} unmet: none of {r.get('any_of')} is in contents.packages")
        used.update(met)
    for n in names:
        if n not in used:
            problems.append(f"package {n} answers no documented requirement")
    for n in req.get("forbidden") or []:
        if n in names:
            problems.append(f"package {n} is forbidden on a node")


def main(argv):
    cfg_path = argv[1] if len(argv) > 1 else os.path.join(HERE, "apko.yaml")
    req_path = argv[2] if len(argv) > 2 else os.path.join(HERE, "requirements.yaml")
    problems = []
    with open(cfg_path) as f:
        cfg = yaml.safe_load(f)
    with open(req_path) as f:
        req = yaml.safe_load(f)
    names = check_structure(cfg, problems)
    check_requirements(names, req, problems)
    if problems:
        for p in problems:
            print(f"{cfg_path}: {p}", file=sys.stderr)
        return 1
    print(f"{cfg_path}: valid; {len(names)} packages meet {len(req['requirements'])} requirements")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
