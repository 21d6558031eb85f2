"""Static checks of the Dockerfiles."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

from k8s_checks.common import REPO, check


def dockerfile_stages() -> list[dict]:
    """Stages of the Dockerfile: {name, base, instructions: [(KEYWORD, args)]}."""
    text = (REPO / "Dockerfile").read_text()
    logical, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") and not current:
            continue
        if line.startswith("#"):
            continue  # comment inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            logical.append(current.strip())
        current = ""
    stages: list[dict] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append({"name": name, "base": parts[0], "instructions": []})
        elif stages:
            if keyword == "RUN":  # drop BuildKit flags (--mount=..., --network=...)
                args = re.sub(r"^(\s*--\S+)+\s+", "", args)
            stages[-1]["instructions"].append((keyword, args.strip()))
    return stages


def env_of(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for keyword, args in instructions:
        if keyword == "ENV":
            for key, value in re.findall(r'(\w+)=("[^"]*"|\S+)', args):
                env[key] = value.strip('"')
    return env


def check_dockerfile() -> dict:
    """Static checks; returns what the manifests must agree with."""
    facts: dict = {}
    if not check((REPO / "Dockerfile").is_file(), "Dockerfile is missing at the repository root"):
        return facts
    stages = dockerfile_stages()
    if not check(len(stages) >= 2, "Dockerfile is not multi-stage"):
        return facts
    final = stages[-1]
    builders = stages[:-1]
    builder_runs = " ; ".join(a for s in builders for k, a in s["instructions"] if k == "RUN")
    builder_names = {s["name"] for s in builders if s["name"]}

    check("wasm32-wasip2" in builder_runs, "builder stage does not add the wasm32-wasip2 target")
    check(
        re.search(r"cargo build\b[^&;]*--release[^&;]*-p edgeserve\b", builder_runs) is not None,
        "builder stage does not run `cargo build --release ... -p edgeserve`",
    )
    commands = [re.sub(r"^(\w+=\S*\s+)*", "", c.strip()) for c in re.split(r"&&|\|\||;|\bthen\b|\bdo\b", builder_runs)]
    check(
        any(re.match(r"(\./)?scripts/build-plugins\.sh\b", c) for c in commands),
        "builder stage does not run scripts/build-plugins.sh (the plugins must be built from source)",
    )

    users = [a for k, a in final["instructions"] if k == "USER"]
    if check(users, "final stage has no USER"):
        user = users[-1]
        m = re.fullmatch(r"(\d+)(?::(\d+))?", user)
        if check(m is not None, f"final stage USER {user!r} is not numeric (runAsNonRoot needs a numeric UID)"):
            facts["uid"] = int(m.group(1))
            check(facts["uid"] != 0, "final stage USER is root (0)")

    # Exactly the two ports the server listens on: REST and gRPC.
    exposed = [int(p.split("/")[0]) for k, a in final["instructions"] if k == "EXPOSE" for p in a.split()]
    env = env_of(final["instructions"])
    facts["env"] = env
    listening = {}
    for name in ("EDGESERVE_HTTP_PORT", "EDGESERVE_GRPC_PORT"):
        value = env.get(name, "")
        if check(value.isdigit() and int(value) > 0, f"final stage does not set {name} to a port (got {value!r})"):
            listening[name] = int(value)
    check(sorted(exposed) == sorted(listening.values()), f"final stage should EXPOSE exactly {listening} (EDGESERVE_HTTP_PORT and EDGESERVE_GRPC_PORT), found {exposed}")
    facts["port"] = listening.get("EDGESERVE_HTTP_PORT")
    facts["grpc_port"] = listening.get("EDGESERVE_GRPC_PORT")
    # The operator's Services (and the pod template k8s/base is generated
    # from) take their ports from two constants: the image must listen there.
    template = (REPO / "crates/operator/src/template.rs").read_text()
    for const, key in (("HTTP_PORT", "port"), ("GRPC_PORT", "grpc_port")):
        found = re.search(rf"pub const {const}: i32 = (\d+);", template)
        if check(found is not None, f"crates/operator/src/template.rs has no `pub const {const}: i32`"):
            check(int(found.group(1)) == facts[key], f"the operator's {const} {found.group(1)} != the image's {facts[key]} (Dockerfile EXPOSE)")
    check(env.get("EDGESERVE_HOST") in ("0.0.0.0", "::"), f"ENV EDGESERVE_HOST is {env.get('EDGESERVE_HOST')!r}: the server would only listen on loopback inside the container")
    models = env.get("EDGESERVE_MODEL_REPOSITORY")
    cache = env.get("EDGESERVE_CACHE_DIR")
    check(models is not None, "final stage does not set EDGESERVE_MODEL_REPOSITORY")
    check(cache is not None, "final stage does not set EDGESERVE_CACHE_DIR (the default is under $HOME, not writable with a read-only root)")
    copies = [a for k, a in final["instructions"] if k == "COPY"]
    from_builder = [a for a in copies if any(f"--from={n}" in a for n in builder_names)]
    check(any(a.split()[-1].rstrip("/") == models for a in from_builder), f"final stage does not COPY the built model repository from the builder to {models}")
    check(any("edgeserve" in a.split()[-1] for a in from_builder), "final stage does not COPY the edgeserve binary from the builder")
    volumes = " ".join(a for k, a in final["instructions"] if k == "VOLUME")
    check(cache is not None and cache in volumes, f"EDGESERVE_CACHE_DIR {cache} is not a VOLUME (docker run --read-only could not write it)")
    entry = " ".join(a for k, a in final["instructions"] if k in ("ENTRYPOINT", "CMD"))
    check("edgeserve" in entry and "serve" in entry, f"ENTRYPOINT/CMD do not run `edgeserve serve`: {entry}")
    final_runs = " ".join(a for k, a in final["instructions"] if k == "RUN")
    check("libvulkan1" in final_runs and "gpu" in final_runs, "the runtime stage has no GPU variant installing the Vulkan loader (libvulkan1)")
    facts["models_dir"], facts["cache_dir"] = models, cache

    ignore = (REPO / ".dockerignore").read_text().split() if (REPO / ".dockerignore").is_file() else []
    check(any(p.strip("/").endswith("target") for p in ignore), ".dockerignore does not exclude target/ folders")
    check("examples/models/*/*/model.wasm" in ignore, ".dockerignore does not exclude prebuilt model.wasm files (the image must build them)")

    # Every complete example model (one with a config.toml) needs a plugin, or
    # the image's model repository has a model without a component (and the
    # builder stage fails).
    # The script installs plugins/<name> as the component of examples/models/<name>.
    workspace = (REPO / "plugins/Cargo.toml").read_text()
    members = re.search(r"members\s*=\s*\[([^\]]*)\]", workspace, re.S)
    built = set(re.findall(r'"([^"]+)"', members.group(1))) if members else set()
    for model in sorted((REPO / "examples/models").iterdir()):
        if (model / "config.toml").is_file():
            check(model.name in built, f"examples/models/{model.name} has no plugin crate plugins/{model.name} in plugins/Cargo.toml (members: {sorted(built)})")
    return facts


def check_operator_dockerfile() -> None:
    """A Dockerfile cannot include another, so the operator's repeats the
    builder's toolchain pin; the two must not drift apart, nor from
    rust-toolchain.toml."""
    operator = REPO / "crates/operator/Dockerfile"
    if not operator.is_file():
        return

    def pins(path: Path) -> dict[str, str]:
        text = path.read_text()
        found = dict(re.findall(r"^ARG\s+(RUST_VERSION|DEBIAN_RELEASE)=(\S+)", text, re.M))
        found["RUSTUP_TOOLCHAIN"] = "${RUST_VERSION}" if "RUSTUP_TOOLCHAIN=${RUST_VERSION}" in text else "unpinned"
        return found

    host, op = pins(REPO / "Dockerfile"), pins(operator)
    check(host == op, f"crates/operator/Dockerfile pins the toolchain {op}, the Dockerfile {host}")
    # Both build with the image's toolchain, so it must be the one the
    # repository's builds use.
    channel = tomllib.loads((REPO / "rust-toolchain.toml").read_text())["toolchain"]["channel"]
    check(host.get("RUST_VERSION") == channel, f"the Dockerfile pins Rust {host.get('RUST_VERSION')}, rust-toolchain.toml {channel}")


