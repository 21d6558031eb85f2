//! `edgeserve build`: compiles a handler project with its language's
//! toolchain and installs the component, its files and its config as a new
//! version in a model repository.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Args;

use super::project::{CONTRACT_VERSION, Project};
use super::{AuthorError, Lang, ToolchainArgs, io, toolchain};

/// Options of `edgeserve build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The project folder (made by `edgeserve new`).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The model repository to install into.
    #[arg(
        long,
        env = "EDGESERVE_MODEL_REPOSITORY",
        default_value = "examples/models"
    )]
    pub repository: PathBuf,
    /// The version folder to install as (default: the next free one).
    #[arg(long)]
    pub version: Option<u64>,
    /// Where toolchains live.
    #[command(flatten)]
    pub toolchains: ToolchainArgs,
}

/// What `edgeserve build` installed.
#[derive(Debug, Clone)]
pub struct Installed {
    /// The model name.
    pub name: String,
    /// The version folder, `REPO/NAME/N`.
    pub version_dir: PathBuf,
    /// The component, `REPO/NAME/N/model.wasm`.
    pub component: PathBuf,
}

impl BuildArgs {
    /// Builds the project and installs it, printing each step.
    pub fn run(&self) -> Result<Installed, AuthorError> {
        let project = Project::open(&self.dir)?;
        let manifest = &project.manifest;
        if !crate::runtime::contract_compatible(&manifest.contract) {
            return Err(AuthorError::Manifest {
                path: self.dir.join(super::project::MANIFEST),
                message: format!(
                    "written against contract {}, which this edgeserve (edgeserve:handler@{CONTRACT_VERSION}) cannot serve; run `edgeserve new` again and move the handler code over",
                    manifest.contract
                ),
            });
        }
        let out = self.dir.join("target").join("edgeserve");
        std::fs::create_dir_all(&out).map_err(io("creating", &out))?;
        let wasm = match manifest.lang {
            Lang::Python => self.build_python(&project, &out)?,
            Lang::Javascript => self.build_javascript(&project, &out)?,
            Lang::Rust => build_rust(&project)?,
        };
        self.install(&project, &wasm)
    }

    fn build_python(&self, project: &Project, out: &Path) -> Result<PathBuf, AuthorError> {
        let componentize = toolchain::python(&self.toolchains.dir())?;
        let wasm = out.join("model.wasm");
        // The sdk folder is vendored by `edgeserve new`; componentize-py
        // generates the contract's bindings (`wit_world`) itself. It reads
        // the module paths inside a sandbox that does not follow symbolic
        // links, so a linked SDK (as in this repository's examples) is
        // passed by its real folder.
        let package = project.dir.join("sdk").join("edgeserve");
        let package =
            std::fs::canonicalize(&package).map_err(io("finding the Python SDK", &package))?;
        let sdk = package.parent().unwrap_or(&package);
        let mut command = Command::new(componentize);
        command
            .current_dir(&project.dir)
            .args(["-d", "wit", "-w", "model-handler", "componentize", "app"])
            .args(["-p", "."])
            .arg("-p")
            .arg(sdk)
            .arg("-o")
            .arg(absolute(&wasm)?);
        compile(project, &mut command)?;
        Ok(wasm)
    }

    fn build_javascript(&self, project: &Project, out: &Path) -> Result<PathBuf, AuthorError> {
        let componentize = toolchain::javascript(&self.toolchains.dir())?;
        let wasm = out.join("model.wasm");
        // componentize-js loads the modules inside a sandbox that refuses
        // symbolic links, so the sources (a linked SDK, as in this
        // repository's examples) are staged as plain files first.
        let staged = out.join("src");
        let _ = std::fs::remove_dir_all(&staged);
        stage(&project.dir, &staged, Stage::ModulesOnly)?;
        stage(&project.dir.join("sdk"), &staged.join("sdk"), Stage::All)?;
        stage(&project.dir.join("wit"), &staged.join("wit"), Stage::All)?;
        // No wasi:http: a handler gets no network, and the host links none.
        let mut command = Command::new(componentize);
        command
            .current_dir(&staged)
            .args(["--wit", "wit", "--world-name", "model-handler"])
            .args(["--disable", "http", "--disable", "fetch-event", "--out"])
            .arg(absolute(&wasm)?)
            .arg("app.js");
        compile(project, &mut command)?;
        Ok(wasm)
    }

    fn install(&self, project: &Project, wasm: &Path) -> Result<Installed, AuthorError> {
        let manifest = &project.manifest;
        let model_dir = self.repository.join(&manifest.name);
        let version = match self.version {
            Some(version) => version,
            None => next_version(&model_dir)?,
        };
        let version_dir = model_dir.join(version.to_string());
        if version_dir.join("model.wasm").exists() {
            return Err(AuthorError::VersionExists(version_dir));
        }
        std::fs::create_dir_all(&version_dir).map_err(io("creating", &version_dir))?;
        let component = version_dir.join("model.wasm");
        copy(wasm, &component)?;
        for file in &manifest.files {
            let name = file.file_name().ok_or_else(|| AuthorError::Manifest {
                path: project.dir.join(super::project::MANIFEST),
                message: format!("files entry {} names no file", file.display()),
            })?;
            copy(&project.dir.join(file), &version_dir.join(name))?;
        }
        if let Some(config) = &manifest.config {
            copy(&project.dir.join(config), &model_dir.join("config.toml"))?;
        }
        let size = std::fs::metadata(&component).map(|m| m.len()).unwrap_or(0);
        println!(
            "installed {} version {version}: {} ({:.1} MiB), {} file(s){}",
            manifest.name,
            component.display(),
            size as f64 / (1 << 20) as f64,
            manifest.files.len(),
            if manifest.config.is_some() {
                ", config.toml"
            } else {
                ""
            },
        );
        println!(
            "serve it: edgeserve serve --model-repository {} (or POST /v2/repository/models/{}/load to a running server)",
            self.repository.display(),
            manifest.name
        );
        Ok(Installed {
            name: manifest.name.clone(),
            version_dir,
            component,
        })
    }
}

fn build_rust(project: &Project) -> Result<PathBuf, AuthorError> {
    toolchain::rust()?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| project.dir.join("target"));
    let mut command = Command::new("cargo");
    command
        .current_dir(&project.dir)
        .args([
            "build",
            "--release",
            "--target",
            toolchain::WASM_TARGET,
            "--target-dir",
        ])
        .arg(absolute(&target_dir)?);
    compile(project, &mut command)?;
    Ok(target_dir
        .join(toolchain::WASM_TARGET)
        .join("release")
        .join(format!("{}.wasm", project.manifest.name.replace('-', "_"))))
}

/// Runs a compiler, its output going to the terminal.
fn compile(project: &Project, command: &mut Command) -> Result<(), AuthorError> {
    let shown = format!("{command:?}");
    println!(
        "building {} ({}): {shown}",
        project.manifest.name, project.manifest.lang
    );
    let status = command.status().map_err(|e| AuthorError::Toolchain {
        lang: project.manifest.lang,
        message: format!("cannot run {shown}: {e}"),
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(AuthorError::Build {
            name: project.manifest.name.clone(),
            lang: project.manifest.lang,
            command: shown,
            status,
        })
    }
}

/// One more than the highest numbered version folder, or 1.
fn next_version(model_dir: &Path) -> Result<u64, AuthorError> {
    let Ok(entries) = std::fs::read_dir(model_dir) else {
        return Ok(1);
    };
    let highest = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    Ok(highest + 1)
}

/// What [`stage`] copies.
#[derive(Clone, Copy, PartialEq)]
enum Stage {
    /// The folder's JavaScript modules, not its subfolders.
    ModulesOnly,
    /// Everything, recursively.
    All,
}

/// Copies `from` into `to` as plain files, following links.
fn stage(from: &Path, to: &Path, what: Stage) -> Result<(), AuthorError> {
    std::fs::create_dir_all(to).map_err(io("creating", to))?;
    for entry in std::fs::read_dir(from).map_err(io("reading", from))? {
        let path = entry.map_err(io("reading", from))?.path();
        let name = path.file_name().unwrap_or_default();
        let module = path.extension().is_some_and(|e| e == "js" || e == "mjs");
        if path.is_dir() {
            if what == Stage::All {
                stage(&path, &to.join(name), what)?;
            }
        } else if what == Stage::All || module {
            copy(&path, &to.join(name))?;
        }
    }
    Ok(())
}

fn copy(from: &Path, to: &Path) -> Result<(), AuthorError> {
    std::fs::copy(from, to)
        .map(drop)
        .map_err(io("copying", from))
}

fn absolute(path: &Path) -> Result<PathBuf, AuthorError> {
    std::path::absolute(path).map_err(io("resolving", path))
}
