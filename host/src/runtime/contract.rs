//! Which contract versions a component may be built against.
//!
//! The contract (`wit/edgeserve.wit`, package `edgeserve:handler`) follows
//! semver as cargo reads it: in 0.x, 0.x.y only adds to 0.x.0; from 1.0,
//! x.y only adds to x.0. A host serves components built against its own
//! version or an older compatible one (wasmtime's linker matches their
//! imports to this host's newer definitions). A component built against a
//! newer or incompatible version is refused before linking, with both
//! versions named, instead of a linker error about one missing function.

use wasmtime::Engine;
use wasmtime::component::Component;

/// The contract version this host implements: the version in
/// `wit/edgeserve.wit`'s `package` line (a test keeps them equal).
pub const CONTRACT_VERSION: &str = "0.1.5";

/// The contract's package name.
const PACKAGE: &str = "edgeserve:handler";

/// Why a component's contract does not fit this host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    /// Built against a version this host cannot serve.
    #[error(
        "the component is built against {PACKAGE}@{found}, but this host implements {PACKAGE}@{CONTRACT_VERSION} and serves components built against {}; {remedy}",
        compatible_range()
    )]
    Incompatible {
        /// The version the component names.
        found: String,
        /// What to do.
        remedy: &'static str,
    },
    /// The component uses the contract with no version, or more than one.
    #[error(
        "the component names {PACKAGE} versions {found}; a handler is built against exactly one (this host implements {CONTRACT_VERSION})"
    )]
    Ambiguous {
        /// The versions it names, comma-separated.
        found: String,
    },
    /// The component imports an interface this host does not provide.
    #[error(
        "the component imports {0}, which this host does not provide (it provides {PACKAGE}@{CONTRACT_VERSION} and WASI 0.2's io, clocks, random, cli, filesystem and sockets, with no capabilities granted)"
    )]
    UnknownImport(String),
    /// The file is a core WebAssembly module, not a component.
    #[error(
        "model.wasm is a core WebAssembly module, not a component; build it as a component (cargo --target wasm32-wasip2, componentize-py, componentize-js, or `edgeserve build`)"
    )]
    CoreModule,
    /// The file is not WebAssembly.
    #[error("model.wasm is not WebAssembly (it does not start with the \\0asm header)")]
    NotWasm,
    /// The component does not use the contract at all.
    #[error(
        "the component does not export {PACKAGE}/handler: it is not an edgeserve model handler (this host implements {PACKAGE}@{CONTRACT_VERSION})"
    )]
    NotAHandler,
}

/// The packages (or `package/interface` prefixes) of the imports the
/// runtime's linker defines: the contract and WASI 0.2 as
/// `wasmtime_wasi::p2::add_to_linker_async` links it (no `wasi:http`).
const PROVIDED: &[&str] = &[
    "edgeserve:handler/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:cli/",
    "wasi:filesystem/",
    "wasi:sockets/",
];

/// Checks that `wasm` is a component before it is compiled, so a core
/// module or a stray file gets a plain answer instead of a parser error.
pub fn check_binary(wasm: &[u8]) -> Result<(), ContractError> {
    match wasm.get(..8) {
        Some([0, b'a', b's', b'm', _, _, 0, 0]) => Err(ContractError::CoreModule),
        Some([0, b'a', b's', b'm', ..]) => Ok(()),
        _ => Err(ContractError::NotWasm),
    }
}

/// `major.minor.patch`, or `None` when `text` is not one.
fn parse(text: &str) -> Option<(u64, u64, u64)> {
    let mut parts = text.split('.').map(|p| p.parse::<u64>().ok());
    let version = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(version)
}

/// Whether a component built against contract `version` runs on this host.
pub fn contract_compatible(version: &str) -> bool {
    let host = parse(CONTRACT_VERSION).expect("CONTRACT_VERSION is major.minor.patch");
    let Some(found) = parse(version) else {
        return false;
    };
    if host.0 == 0 {
        found.0 == 0 && found.1 == host.1 && found.2 <= host.2
    } else {
        found.0 == host.0 && (found.1, found.2) <= (host.1, host.2)
    }
}

/// The versions this host serves, in words.
fn compatible_range() -> String {
    let (major, minor, _) = parse(CONTRACT_VERSION).expect("CONTRACT_VERSION is major.minor.patch");
    if major == 0 {
        format!("{major}.{minor}.0 to {CONTRACT_VERSION}")
    } else {
        format!("{major}.0.0 to {CONTRACT_VERSION}")
    }
}

/// Checks the contract version `component` is built against.
pub fn check(engine: &Engine, component: &Component) -> Result<(), ContractError> {
    let ty = component.component_type();
    if let Some((name, _)) = ty
        .imports(engine)
        .find(|(name, _)| !PROVIDED.iter().any(|p| name.starts_with(p)))
    {
        return Err(ContractError::UnknownImport(name.to_owned()));
    }
    let names = ty
        .imports(engine)
        .map(|(name, _)| name)
        .chain(ty.exports(engine).map(|(name, _)| name));
    let mut versions: Vec<&str> = Vec::new();
    let mut exports_handler = false;
    for name in names {
        let Some(rest) = name.strip_prefix(PACKAGE).and_then(|r| r.strip_prefix('/')) else {
            continue;
        };
        let (interface, version) = rest.split_once('@').unwrap_or((rest, ""));
        exports_handler |= interface == "handler";
        if !versions.contains(&version) {
            versions.push(version);
        }
    }
    if !exports_handler {
        return Err(ContractError::NotAHandler);
    }
    match versions.as_slice() {
        [version] if contract_compatible(version) => Ok(()),
        [version] => {
            let newer = parse(version).is_some_and(|found| {
                found > parse(CONTRACT_VERSION).expect("CONTRACT_VERSION is major.minor.patch")
            });
            Err(ContractError::Incompatible {
                found: version.to_string(),
                remedy: if newer {
                    "upgrade edgeserve, or rebuild the handler against this host's contract"
                } else {
                    "rebuild the handler against this host's contract (`edgeserve new` vendors it)"
                },
            })
        }
        _ => Err(ContractError::Ambiguous {
            found: versions
                .iter()
                .map(|v| if v.is_empty() { "(none)" } else { v })
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_the_one_the_wit_declares() {
        let wit = include_str!("../../../wit/edgeserve.wit");
        let declared = format!("package {PACKAGE}@{CONTRACT_VERSION};");
        assert!(
            wit.lines().any(|line| line.trim() == declared),
            "wit/edgeserve.wit does not declare `{declared}`"
        );
    }

    #[test]
    fn older_patches_of_this_minor_are_served_and_nothing_else() {
        assert!(contract_compatible("0.1.0"));
        assert!(contract_compatible("0.1.1"));
        assert!(contract_compatible("0.1.2"));
        assert!(contract_compatible("0.1.3"));
        assert!(contract_compatible("0.1.4"));
        assert!(contract_compatible(CONTRACT_VERSION));
        for refused in ["0.1.6", "0.2.0", "0.0.9", "1.1.0", "0.1", "x"] {
            assert!(!contract_compatible(refused), "{refused} accepted");
        }
    }

    #[test]
    fn core_modules_and_other_files_are_told_apart_from_components() {
        let component = [0, b'a', b's', b'm', 0x0d, 0, 1, 0];
        assert_eq!(check_binary(&component), Ok(()));
        assert_eq!(
            check_binary(b"\0asm\x01\0\0\0"),
            Err(ContractError::CoreModule)
        );
        assert_eq!(check_binary(b"not wasm"), Err(ContractError::NotWasm));
        assert_eq!(check_binary(b""), Err(ContractError::NotWasm));
    }

    #[test]
    fn the_error_names_both_versions() {
        let text = ContractError::Incompatible {
            found: "0.2.0".into(),
            remedy: "r",
        }
        .to_string();
        assert!(text.contains("edgeserve:handler@0.2.0"), "{text}");
        assert!(
            text.contains(&format!("edgeserve:handler@{CONTRACT_VERSION}")),
            "{text}"
        );
    }
}
