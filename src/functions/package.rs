//! Assembling the publish folder `func azure functionapp publish` zips as is: host.json, the
//! function folders directly next to it, the Linux binary named `suroga`, and a
//! local.settings.json that tells Core Tools the worker runtime is `custom` (Core Tools reads it
//! to decide how to publish and never uploads it; without it, publishing stops with "Worker
//! runtime cannot be 'None'").
//!
//! The binary must run on the Functions Linux image (Debian 11, glibc 2.31): a static build
//! (`x86_64-unknown-linux-musl`, preferred) or a glibc build that needs no symbol version newer
//! than [`MAX_GLIBC`] and only libraries the image has. [`inspect_elf`] reads the ELF program
//! headers (interpreter), the `.dynamic` section (needed libraries) and `.gnu.version_r`
//! (needed symbol versions) to decide, so a binary built on a newer distribution is refused
//! before it is deployed and fails to start there.

use std::{
    fmt, fs,
    path::{Path, PathBuf},
};

use utoipa::openapi::OpenApi;

use super::manifest::{ExportError, export, function_files};

/// host.json as checked in at the repository top level (embedded so the two cannot differ).
pub const HOST_JSON: &str = include_str!("../../host.json");

/// local.settings.json of the publish folder: only the worker runtime Core Tools needs to know
/// (no secrets: it stays on the operator's machine, and app settings come from infra/main.bicep).
pub const LOCAL_SETTINGS_JSON: &str = r#"{
  "IsEncrypted": false,
  "Values": {
    "FUNCTIONS_WORKER_RUNTIME": "custom"
  }
}
"#;

/// The newest glibc the Functions Linux image provides (Debian 11 "bullseye").
pub const MAX_GLIBC: GlibcVersion = GlibcVersion(2, 31, 0);

/// Shared libraries present on the Functions Linux image (glibc's own plus libgcc).
pub const IMAGE_LIBRARIES: &[&str] = &[
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "libpthread.so.0",
    "librt.so.1",
    "libutil.so.1",
    "libgcc_s.so.1",
    "ld-linux-x86-64.so.2",
];

/// A glibc symbol version, e.g. `GLIBC_2.34` → `GlibcVersion(2, 34, 0)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GlibcVersion(pub u32, pub u32, pub u32);

impl GlibcVersion {
    /// Parses the part after `GLIBC_` (`2.3.4`); `None` for `GLIBC_PRIVATE` and the like.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split('.').map(|p| p.parse::<u32>().ok());
        let major = parts.next()??;
        let minor = parts.next().unwrap_or(Some(0))?;
        let patch = parts.next().unwrap_or(Some(0))?;
        parts.next().is_none().then_some(Self(major, minor, patch))
    }
}

impl fmt::Display for GlibcVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.2 {
            0 => write!(f, "{}.{}", self.0, self.1),
            p => write!(f, "{}.{}.{}", self.0, self.1, p),
        }
    }
}

/// How an x86-64 Linux executable is linked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Linkage {
    /// No program interpreter: runs anywhere (static musl, static-pie).
    Static,
    /// Dynamically linked through an interpreter.
    Dynamic {
        /// `PT_INTERP`, e.g. `/lib64/ld-linux-x86-64.so.2`.
        interpreter: String,
        /// `DT_NEEDED` libraries.
        needed: Vec<String>,
        /// The newest `GLIBC_*` symbol version it needs, if any.
        max_glibc: Option<GlibcVersion>,
    },
}

/// Why a folder could not be packaged or a binary is refused.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// Not a 64-bit little-endian ELF executable.
    #[error("{path} is not a 64-bit little-endian ELF executable")]
    NotElfExecutable { path: PathBuf },
    /// Built for another CPU (the Functions Linux workers are x86-64).
    #[error("{path} is built for ELF machine {machine}, not x86-64 (62)")]
    WrongArchitecture { path: PathBuf, machine: u16 },
    /// The ELF structures point outside the file.
    #[error("{path} has a malformed ELF structure")]
    Malformed { path: PathBuf },
    /// Dynamically linked through an interpreter the image lacks (e.g. musl's `ld-musl`).
    #[error(
        "{path} needs the program interpreter {interpreter}, which the Functions image lacks; build static (x86_64-unknown-linux-musl)"
    )]
    UnsupportedInterpreter { path: PathBuf, interpreter: String },
    /// Needs a glibc newer than the image's.
    #[error("{path} needs GLIBC_{found}, the Functions image has {max}; build with scripts/package.sh (static musl)")]
    GlibcTooNew { path: PathBuf, found: GlibcVersion, max: GlibcVersion },
    /// Needs a shared library the image lacks.
    #[error("{path} needs {library}, which the Functions image lacks")]
    MissingLibrary { path: PathBuf, library: String },
    /// The output folder holds other things and no host.json: refusing to write into it.
    #[error("{path} is not empty and is not a publish folder (no host.json); choose another output folder")]
    NotAPublishFolder { path: PathBuf },
    #[error(transparent)]
    Export(#[from] ExportError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PackageError + '_ {
    move |source| PackageError::Io { path: path.to_path_buf(), source }
}

struct Elf<'a> {
    b: &'a [u8],
}

impl Elf<'_> {
    fn u16(&self, at: u64) -> Option<u16> {
        let at = usize::try_from(at).ok()?;
        Some(u16::from_le_bytes(self.b.get(at..at.checked_add(2)?)?.try_into().ok()?))
    }
    fn u32(&self, at: u64) -> Option<u32> {
        let at = usize::try_from(at).ok()?;
        Some(u32::from_le_bytes(self.b.get(at..at.checked_add(4)?)?.try_into().ok()?))
    }
    fn u64(&self, at: u64) -> Option<u64> {
        let at = usize::try_from(at).ok()?;
        Some(u64::from_le_bytes(self.b.get(at..at.checked_add(8)?)?.try_into().ok()?))
    }
    fn cstr(&self, at: u64) -> Option<String> {
        let at = usize::try_from(at).ok()?;
        let rest = self.b.get(at..)?;
        let end = rest.iter().position(|c| *c == 0)?;
        Some(String::from_utf8_lossy(&rest[..end]).into_owned())
    }
}

const PT_INTERP: u32 = 3;
const SHT_DYNAMIC: u32 = 6;
const SHT_GNU_VERNEED: u32 = 0x6fff_fffe;
const DT_NEEDED: u64 = 1;

/// Reads how an executable is linked. Errors: [`PackageError::Io`], [`PackageError::NotElfExecutable`],
/// [`PackageError::WrongArchitecture`], [`PackageError::Malformed`]. Does not judge the result;
/// see [`check_runs_on_functions_image`].
pub fn inspect_elf(path: &Path) -> Result<Linkage, PackageError> {
    let bytes = fs::read(path).map_err(io(path))?;
    parse_elf(&bytes).map_err(|e| match e {
        ElfFault::NotElf => PackageError::NotElfExecutable { path: path.to_path_buf() },
        ElfFault::Machine(machine) => PackageError::WrongArchitecture { path: path.to_path_buf(), machine },
        ElfFault::Malformed => PackageError::Malformed { path: path.to_path_buf() },
    })
}

enum ElfFault {
    NotElf,
    Machine(u16),
    Malformed,
}

fn m<T>(o: Option<T>) -> Result<T, ElfFault> {
    o.ok_or(ElfFault::Malformed)
}

fn parse_elf(b: &[u8]) -> Result<Linkage, ElfFault> {
    // e_ident: magic, ELFCLASS64, ELFDATA2LSB; e_type EXEC or DYN.
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 || b[5] != 1 {
        return Err(ElfFault::NotElf);
    }
    let e = Elf { b };
    if !matches!(m(e.u16(16))?, 2 | 3) {
        return Err(ElfFault::NotElf);
    }
    let machine = m(e.u16(18))?;
    if machine != 62 {
        return Err(ElfFault::Machine(machine));
    }
    let (phoff, phentsize, phnum) = (m(e.u64(32))?, u64::from(m(e.u16(54))?), u64::from(m(e.u16(56))?));
    let mut interpreter = None;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if m(e.u32(ph))? == PT_INTERP {
            interpreter = Some(m(e.cstr(m(e.u64(ph + 8))?))?);
        }
    }
    let Some(interpreter) = interpreter else {
        return Ok(Linkage::Static);
    };

    let (shoff, shentsize, shnum) = (m(e.u64(40))?, u64::from(m(e.u16(58))?), u64::from(m(e.u16(60))?));
    // (type, offset, size, link, info) of every section.
    let sections: Vec<(u32, u64, u64, u32, u32)> = (0..shnum)
        .map(|i| {
            let sh = shoff + i * shentsize;
            Some((e.u32(sh + 4)?, e.u64(sh + 24)?, e.u64(sh + 32)?, e.u32(sh + 40)?, e.u32(sh + 44)?))
        })
        .collect::<Option<_>>()
        .ok_or(ElfFault::Malformed)?;
    let strtab = |link: u32| sections.get(link as usize).map(|s| s.1).ok_or(ElfFault::Malformed);

    let mut needed = Vec::new();
    let mut max_glibc = None;
    for &(kind, offset, size, link, info) in &sections {
        if kind == SHT_DYNAMIC {
            let strings = strtab(link)?;
            for at in (offset..offset + size).step_by(16) {
                if m(e.u64(at))? == DT_NEEDED {
                    needed.push(m(e.cstr(strings + m(e.u64(at + 8))?))?);
                }
            }
        } else if kind == SHT_GNU_VERNEED {
            let strings = strtab(link)?;
            // `info` entries of Elf64_Verneed, each with a chain of Elf64_Vernaux.
            let mut need = offset;
            for _ in 0..info {
                let (count, mut aux) = (m(e.u16(need + 2))?, need + u64::from(m(e.u32(need + 8))?));
                for _ in 0..count {
                    let name = m(e.cstr(strings + u64::from(m(e.u32(aux + 8))?)))?;
                    if let Some(v) = name.strip_prefix("GLIBC_").and_then(GlibcVersion::parse) {
                        max_glibc = max_glibc.max(Some(v));
                    }
                    aux += u64::from(m(e.u32(aux + 12))?);
                }
                let next = m(e.u32(need + 12))?;
                if next == 0 {
                    break;
                }
                need += u64::from(next);
            }
        }
    }
    Ok(Linkage::Dynamic { interpreter, needed, max_glibc })
}

/// Refuses a binary that would not start on the Functions Linux image; returns how it is linked.
/// Errors: those of [`inspect_elf`], [`PackageError::UnsupportedInterpreter`],
/// [`PackageError::GlibcTooNew`], [`PackageError::MissingLibrary`].
pub fn check_runs_on_functions_image(binary: &Path) -> Result<Linkage, PackageError> {
    let linkage = inspect_elf(binary)?;
    if let Linkage::Dynamic { interpreter, needed, max_glibc } = &linkage {
        let path = binary.to_path_buf();
        if interpreter != "/lib64/ld-linux-x86-64.so.2" {
            return Err(PackageError::UnsupportedInterpreter { path, interpreter: interpreter.clone() });
        }
        if let Some(found) = max_glibc.filter(|v| *v > MAX_GLIBC) {
            return Err(PackageError::GlibcTooNew { path, found, max: MAX_GLIBC });
        }
        if let Some(library) = needed.iter().find(|l| !IMAGE_LIBRARIES.contains(&l.as_str())) {
            return Err(PackageError::MissingLibrary { path, library: library.clone() });
        }
    }
    Ok(linkage)
}

/// What [`package`] assembled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageReport {
    pub out: PathBuf,
    pub linkage: Linkage,
    /// Function folders written next to host.json.
    pub functions: usize,
}

/// Assembles `out` for `func azure functionapp publish`: host.json, every function folder
/// directly next to it (stale ones removed), `binary` copied as `suroga` (mode 755) and
/// [`LOCAL_SETTINGS_JSON`]. No `.funcignore`. Checks the binary first and the function table before
/// writing anything. Idempotent. Errors: those of [`check_runs_on_functions_image`],
/// [`PackageError::NotAPublishFolder`] when `out` holds other files, [`PackageError::Export`],
/// [`PackageError::Io`].
pub fn package(out: &Path, binary: &Path, api: &OpenApi) -> Result<PackageReport, PackageError> {
    let linkage = check_runs_on_functions_image(binary)?;
    let functions = function_files(api).map_err(ExportError::from)?.len();
    if out.exists() && !out.join("host.json").is_file() && fs::read_dir(out).map_err(io(out))?.next().is_some() {
        return Err(PackageError::NotAPublishFolder { path: out.to_path_buf() });
    }
    fs::create_dir_all(out).map_err(io(out))?;
    let host = out.join("host.json");
    fs::write(&host, HOST_JSON).map_err(io(&host))?;
    let settings = out.join("local.settings.json");
    fs::write(&settings, LOCAL_SETTINGS_JSON).map_err(io(&settings))?;
    export(out, api)?;
    let target = out.join("suroga");
    // Copy through a temporary name so a running publish folder never sees half a binary, and so
    // packaging the binary that is running (`suroga functions package`) works.
    let tmp = out.join(".suroga.tmp");
    fs::copy(binary, &tmp).map_err(io(&tmp))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).map_err(io(&tmp))?;
    }
    fs::rename(&tmp, &target).map_err(io(&target))?;
    Ok(PackageReport { out: out.to_path_buf(), linkage, functions })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal x86-64 ELF: optional PT_INTERP, and a `.gnu.version_r` needing `versions` from
    /// libc.so.6 (dynstr section 1, verneed section 2).
    fn elf(interp: Option<&str>, versions: &[&str]) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[6] = 1;
        b[16..18].copy_from_slice(&3u16.to_le_bytes());
        b[18..20].copy_from_slice(&62u16.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[58..60].copy_from_slice(&64u16.to_le_bytes());
        let Some(interp) = interp else { return b };
        // One program header right after the ELF header.
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[56..58].copy_from_slice(&1u16.to_le_bytes());
        let mut ph = vec![0u8; 56];
        ph[..4].copy_from_slice(&PT_INTERP.to_le_bytes());
        ph[8..16].copy_from_slice(&120u64.to_le_bytes());
        b.extend(ph);
        b.extend(interp.as_bytes());
        b.push(0);
        // dynstr: "\0libc.so.6\0" then the version names.
        let dynstr_off = b.len() as u64;
        let mut dynstr = b"\0libc.so.6\0".to_vec();
        let mut name_offs = vec![];
        for v in versions {
            name_offs.push(dynstr.len() as u32);
            dynstr.extend(v.as_bytes());
            dynstr.push(0);
        }
        b.extend(&dynstr);
        let verneed_off = b.len() as u64;
        let mut vn = vec![0u8; 16];
        vn[..2].copy_from_slice(&1u16.to_le_bytes());
        vn[2..4].copy_from_slice(&(versions.len() as u16).to_le_bytes());
        vn[4..8].copy_from_slice(&1u32.to_le_bytes());
        vn[8..12].copy_from_slice(&16u32.to_le_bytes());
        b.extend(vn);
        for (i, off) in name_offs.iter().enumerate() {
            let mut aux = vec![0u8; 16];
            aux[8..12].copy_from_slice(&off.to_le_bytes());
            let next: u32 = if i + 1 < versions.len() { 16 } else { 0 };
            aux[12..16].copy_from_slice(&next.to_le_bytes());
            b.extend(aux);
        }
        let verneed_size = b.len() as u64 - verneed_off;
        let shoff = b.len() as u64;
        b[40..48].copy_from_slice(&shoff.to_le_bytes());
        b[60..62].copy_from_slice(&3u16.to_le_bytes());
        let section = |kind: u32, off: u64, size: u64, link: u32, info: u32| {
            let mut s = vec![0u8; 64];
            s[4..8].copy_from_slice(&kind.to_le_bytes());
            s[24..32].copy_from_slice(&off.to_le_bytes());
            s[32..40].copy_from_slice(&size.to_le_bytes());
            s[40..44].copy_from_slice(&link.to_le_bytes());
            s[44..48].copy_from_slice(&info.to_le_bytes());
            s
        };
        b.extend(section(0, 0, 0, 0, 0));
        b.extend(section(3, dynstr_off, dynstr.len() as u64, 0, 0));
        b.extend(section(SHT_GNU_VERNEED, verneed_off, verneed_size, 1, 1));
        b
    }

    /// A temporary file holding `bytes`, removed when dropped.
    fn write(bytes: &[u8]) -> tempfile::TempPath {
        let mut f = tempfile::Builder::new().prefix("suroga-elf-").tempfile().unwrap();
        std::io::Write::write_all(&mut f, bytes).unwrap();
        f.into_temp_path()
    }

    #[test]
    fn glibc_versions_parse_and_order() {
        assert_eq!(GlibcVersion::parse("2.3.4"), Some(GlibcVersion(2, 3, 4)));
        assert_eq!(GlibcVersion::parse("2.34"), Some(GlibcVersion(2, 34, 0)));
        assert_eq!(GlibcVersion::parse("PRIVATE"), None);
        assert!(GlibcVersion(2, 31, 0) < GlibcVersion(2, 34, 0));
        assert!(GlibcVersion(2, 3, 4) < GlibcVersion(2, 14, 0));
        assert_eq!(GlibcVersion(2, 3, 4).to_string(), "2.3.4");
        assert_eq!(MAX_GLIBC.to_string(), "2.31");
    }

    #[test]
    fn a_static_binary_is_accepted() {
        let p = write(&elf(None, &[]));
        assert_eq!(check_runs_on_functions_image(&p).unwrap(), Linkage::Static);
    }

    #[test]
    fn glibc_up_to_2_31_is_accepted_and_the_maximum_reported() {
        let p = write(&elf(
            Some("/lib64/ld-linux-x86-64.so.2"),
            &["GLIBC_2.2.5", "GLIBC_2.31", "GLIBC_2.14", "GLIBC_PRIVATE"],
        ));
        match check_runs_on_functions_image(&p).unwrap() {
            Linkage::Dynamic { max_glibc, .. } => {
                assert_eq!(max_glibc, Some(GlibcVersion(2, 31, 0)))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn glibc_2_34_is_refused() {
        let p = write(&elf(Some("/lib64/ld-linux-x86-64.so.2"), &["GLIBC_2.2.5", "GLIBC_2.34", "GLIBC_2.32"]));
        match check_runs_on_functions_image(&p) {
            Err(PackageError::GlibcTooNew { found, max, .. }) => {
                assert_eq!((found, max), (GlibcVersion(2, 34, 0), MAX_GLIBC))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn dynamic_musl_is_refused() {
        let p = write(&elf(Some("/lib/ld-musl-x86_64.so.1"), &[]));
        assert!(matches!(check_runs_on_functions_image(&p), Err(PackageError::UnsupportedInterpreter { .. })));
    }

    #[test]
    fn other_architectures_and_non_elf_files_are_refused() {
        let mut arm = elf(None, &[]);
        arm[18..20].copy_from_slice(&183u16.to_le_bytes());
        assert!(matches!(inspect_elf(&write(&arm)), Err(PackageError::WrongArchitecture { machine: 183, .. })));
        assert!(matches!(inspect_elf(&write(b"#!/bin/sh\necho hi\n")), Err(PackageError::NotElfExecutable { .. })));
    }

    #[test]
    fn truncated_structures_are_malformed_not_a_panic() {
        let full = elf(Some("/lib64/ld-linux-x86-64.so.2"), &["GLIBC_2.17"]);
        for cut in [70, 130, full.len() - 30] {
            assert!(matches!(inspect_elf(&write(&full[..cut])), Err(PackageError::Malformed { .. })), "cut at {cut}");
        }
    }

    #[test]
    fn package_assembles_host_json_functions_and_the_binary() {
        let out = std::env::temp_dir().join(format!("suroga-publish-{}", uuid::Uuid::new_v4()));
        let bin = write(&elf(None, &[]));
        let api = utoipa::openapi::OpenApiBuilder::new().build();
        let report = package(&out, &bin, &api).unwrap();
        assert_eq!(report.linkage, Linkage::Static);
        assert_eq!(fs::read_to_string(out.join("host.json")).unwrap(), HOST_JSON);
        assert!(out.join("fleet-reconcile/function.json").is_file());
        assert!(out.join("v1-openapi_json/function.json").is_file());
        assert_eq!(fs::read(out.join("suroga")).unwrap(), fs::read(&*bin).unwrap());
        assert!(!out.join(".funcignore").exists());
        let settings: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(out.join("local.settings.json")).unwrap()).unwrap();
        assert_eq!(
            settings,
            serde_json::json!({"IsEncrypted": false, "Values": {"FUNCTIONS_WORKER_RUNTIME": "custom"}})
        );
        assert_eq!(report.functions, function_files(&api).unwrap().len());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(out.join("suroga")).unwrap().permissions().mode() & 0o777, 0o755);
        }
        // Idempotent: a second run over the same folder succeeds.
        package(&out, &bin, &api).unwrap();
        fs::remove_dir_all(&out).unwrap();
    }

    #[test]
    fn package_refuses_a_foreign_non_empty_folder() {
        let out = std::env::temp_dir().join(format!("suroga-publish-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&out).unwrap();
        fs::write(out.join("Cargo.toml"), "").unwrap();
        let bin = write(&elf(None, &[]));
        let api = utoipa::openapi::OpenApiBuilder::new().build();
        assert!(matches!(package(&out, &bin, &api), Err(PackageError::NotAPublishFolder { .. })));
        assert!(!out.join("host.json").exists());
        fs::remove_dir_all(&out).unwrap();
    }

    #[test]
    fn host_json_is_the_reference_document() {
        let v: serde_json::Value = serde_json::from_str(HOST_JSON).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
              "version": "2.0",
              "functionTimeout": "00:05:00",
              "extensions": { "http": { "routePrefix": "" } },
              "customHandler": {
                "description": { "defaultExecutablePath": "suroga", "workingDirectory": "", "arguments": ["serve"] },
                "enableForwardingHttpRequest": true,
                "enableProxyingHttpRequest": true
              }
            })
        );
    }
}
