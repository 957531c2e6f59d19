//! The Azure Functions custom-handler contract (spec: /work/shared/reference/functions-host.md).
//!
//! - [`manifest`]: the function table (HTTP functions from the OpenAPI document plus
//!   [`manifest::EXTRA_HTTP`], timer functions from [`manifest::TIMERS`]) and `function.json`
//!   generation; [`export`] writes `handlers/`.
//! - [`timer`]: the host's timer invocation envelope ([`TimerInvocation`], an axum extractor) and
//!   the reply it needs ([`timer_reply`], [`timer_error_reply`]).
//! - [`ncrontab`]: the 6-field schedule evaluator standalone `suroga serve` uses to fire the same
//!   timers on the same schedules.
//! - [`package`]: the publish folder and the check that the binary runs on the Functions image.
//! - [`access`]: who may call the timer routes (the host, or a local process standalone).
//! - [`FunctionsCommand`]: the `suroga functions export|package` CLI.

pub mod access;
pub mod manifest;
pub mod ncrontab;
pub mod package;
pub mod timer;

use std::path::PathBuf;

use utoipa::openapi::OpenApi;

pub use manifest::{
    EXTRA_HTTP, ExportError, HttpFunction, ManifestError, TIMERS, TimerFunction, export, http_functions, next_timers,
};
pub use ncrontab::{Schedule, ScheduleError, next_after};
pub use package::{Linkage, PackageError, PackageReport, package};
pub use timer::{TimerInvocation, timer_error_reply, timer_reply};

/// `suroga functions ...`: keep the Functions artefacts in step with the code.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum FunctionsCommand {
    /// Write <dir>/<function>/function.json for every HTTP and timer function; remove stale ones.
    Export {
        #[arg(long, default_value = "handlers")]
        dir: PathBuf,
    },
    /// Assemble the publish folder: host.json, function folders and the Linux binary `suroga`.
    Package {
        #[arg(long, default_value = "publish")]
        out: PathBuf,
        /// The binary to publish (default: this executable). Must be static (musl) or need glibc <= 2.31.
        #[arg(long)]
        binary: Option<PathBuf>,
    },
}

/// Why a `suroga functions` command failed.
#[derive(Debug, thiserror::Error)]
pub enum FunctionsCommandError {
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error("cannot locate the running executable: {0}")]
    CurrentExe(std::io::Error),
}

impl FunctionsCommand {
    /// Runs the command against the API's OpenAPI document; returns a one-line summary for the
    /// operator. Idempotent.
    pub fn run(self, api: &OpenApi) -> Result<String, FunctionsCommandError> {
        match self {
            FunctionsCommand::Export { dir } => {
                export(&dir, api)?;
                let n = manifest::function_files(api).map_err(ExportError::from)?.len();
                Ok(format!("wrote {n} function.json files under {}", dir.display()))
            }
            FunctionsCommand::Package { out, binary } => {
                let binary = match binary {
                    Some(b) => b,
                    None => std::env::current_exe().map_err(FunctionsCommandError::CurrentExe)?,
                };
                let r = package(&out, &binary, api)?;
                let linkage = match &r.linkage {
                    Linkage::Static => "static".to_string(),
                    Linkage::Dynamic { max_glibc: Some(v), .. } => format!("dynamic, glibc {v}"),
                    Linkage::Dynamic { max_glibc: None, .. } => "dynamic".to_string(),
                };
                Ok(format!(
                    "packaged {} functions and {} ({linkage}) into {}",
                    r.functions,
                    binary.display(),
                    r.out.display()
                ))
            }
        }
    }
}
