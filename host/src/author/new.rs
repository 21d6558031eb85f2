//! `edgeserve new`: a ready-to-build handler project, with the contract and
//! the SDK of its language vendored, so it builds with no other download
//! than its toolchain.

use std::path::{Path, PathBuf};

use clap::Args;

use super::project::{CONTRACT_VERSION, MANIFEST, validate_name};
use super::{AuthorError, Lang, io};

/// Options of `edgeserve new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The handler's name, also its model name (lowercase, digits, '-').
    pub name: String,
    /// The language to write it in.
    #[arg(long, value_enum)]
    pub lang: Lang,
    /// Folder to create the project in (default `./NAME`).
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// A file of a project: its path in the project and its text (with
/// `{{name}}`, `{{class}}`, `{{crate}}`, `{{lang}}` and `{{contract}}`
/// filled in when written).
type File = (&'static str, &'static str);

/// Expands to `(path in the project, text)` pairs read from the repository
/// at compile time, so the binary carries the SDKs it scaffolds.
macro_rules! embed {
    ($($dest:literal => $src:literal),* $(,)?) => {
        &[$(($dest, include_str!(concat!("../../../", $src)))),*]
    };
}

/// Every project, whatever its language.
const COMMON: &[File] = embed! {
    "wit/edgeserve.wit" => "wit/edgeserve.wit",
    "edgeserve.toml" => "host/src/author/templates/edgeserve.toml",
    "config.toml" => "host/src/author/templates/config.toml",
};

const PYTHON: &[File] = embed! {
    "app.py" => "host/src/author/templates/python/app.py",
    "README.md" => "host/src/author/templates/python/README.md",
    "sdk/edgeserve/__init__.py" => "plugins/sdk-python/edgeserve/__init__.py",
    "sdk/edgeserve/tensor.py" => "plugins/sdk-python/edgeserve/tensor.py",
    "sdk/edgeserve/model.py" => "plugins/sdk-python/edgeserve/model.py",
    "sdk/edgeserve/nn.py" => "plugins/sdk-python/edgeserve/nn.py",
    "sdk/edgeserve/request.py" => "plugins/sdk-python/edgeserve/request.py",
    "sdk/edgeserve/handler.py" => "plugins/sdk-python/edgeserve/handler.py",
};

const JAVASCRIPT: &[File] = embed! {
    "app.js" => "host/src/author/templates/javascript/app.js",
    "README.md" => "host/src/author/templates/javascript/README.md",
    "sdk/edgeserve.js" => "plugins/sdk-js/edgeserve.js",
    "sdk/edgeserve.d.ts" => "plugins/sdk-js/edgeserve.d.ts",
    // The contract's types, generated from the WIT (generate-types.mjs).
    "sdk/types/model-handler.d.ts" => "plugins/sdk-js/types/model-handler.d.ts",
    "sdk/types/interfaces/edgeserve-handler-handler.d.ts" => "plugins/sdk-js/types/interfaces/edgeserve-handler-handler.d.ts",
    "sdk/types/interfaces/edgeserve-handler-model.d.ts" => "plugins/sdk-js/types/interfaces/edgeserve-handler-model.d.ts",
    "sdk/types/interfaces/edgeserve-handler-output.d.ts" => "plugins/sdk-js/types/interfaces/edgeserve-handler-output.d.ts",
    "sdk/types/interfaces/edgeserve-handler-tensor.d.ts" => "plugins/sdk-js/types/interfaces/edgeserve-handler-tensor.d.ts",
    "sdk/types/interfaces/edgeserve-handler-types.d.ts" => "plugins/sdk-js/types/interfaces/edgeserve-handler-types.d.ts",
};

const RUST: &[File] = embed! {
    "Cargo.toml" => "host/src/author/templates/rust/Cargo.toml",
    "src/lib.rs" => "host/src/author/templates/rust/lib.rs",
    "README.md" => "host/src/author/templates/rust/README.md",
    "sdk/edgeserve-sdk/Cargo.toml" => "host/src/author/templates/rust/sdk.Cargo.toml",
    "sdk/edgeserve-sdk/src/lib.rs" => "plugins/sdk/src/lib.rs",
    "sdk/edgeserve-sdk/src/model.rs" => "plugins/sdk/src/model.rs",
    "sdk/edgeserve-sdk/src/nn.rs" => "plugins/sdk/src/nn.rs",
    "sdk/edgeserve-sdk/src/output.rs" => "plugins/sdk/src/output.rs",
    "sdk/edgeserve-sdk/src/parameter.rs" => "plugins/sdk/src/parameter.rs",
    "sdk/edgeserve-sdk/src/request.rs" => "plugins/sdk/src/request.rs",
    "sdk/edgeserve-sdk/src/tensor.rs" => "plugins/sdk/src/tensor.rs",
};

/// The files of a `lang` project.
fn files(lang: Lang) -> impl Iterator<Item = &'static File> {
    let own: &[File] = match lang {
        Lang::Python => PYTHON,
        Lang::Javascript => JAVASCRIPT,
        Lang::Rust => RUST,
    };
    COMMON.iter().chain(own)
}

impl NewArgs {
    /// Writes the project and prints what to do next.
    pub fn run(&self) -> Result<PathBuf, AuthorError> {
        validate_name(&self.name)?;
        let dir = self
            .output
            .clone()
            .unwrap_or_else(|| PathBuf::from(&self.name));
        let occupied = std::fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_some());
        if occupied {
            return Err(AuthorError::NotEmpty(dir));
        }
        for (path, text) in files(self.lang) {
            write(&dir.join(path), &self.fill(text))?;
        }
        println!(
            "created {} handler `{}` in {} (contract edgeserve:handler@{CONTRACT_VERSION}, {MANIFEST})",
            self.lang,
            self.name,
            dir.display()
        );
        println!("next: edgeserve build {}", dir.display());
        Ok(dir)
    }

    fn fill(&self, template: &str) -> String {
        let class: String = self
            .name
            .split('-')
            .map(|part| {
                let mut chars = part.chars();
                chars
                    .next()
                    .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                    .unwrap_or_default()
            })
            .collect();
        template
            .replace("{{name}}", &self.name)
            .replace("{{class}}", &class)
            .replace("{{crate}}", &self.name.replace('-', "_"))
            .replace("{{lang}}", &self.lang.to_string())
            .replace("{{contract}}", CONTRACT_VERSION)
    }
}

fn write(path: &Path, text: &str) -> Result<(), AuthorError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
    }
    std::fs::write(path, text).map_err(io("writing", path))
}
