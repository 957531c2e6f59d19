//! Embeds the built web client (`web/dist/`, committed; see web/build.mjs) into the binary: it
//! writes `$OUT_DIR/web_assets.rs` with one `include_bytes!` per file, so the service serves the
//! app with no files beside it and no Node at build time.

use std::{
    env, fs,
    path::{Path, PathBuf},
};

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let dist = root.join("web").join("dist");
    println!("cargo:rerun-if-changed=web/dist");
    let mut files = Vec::new();
    walk(&dist, &mut files);
    files.sort();
    let mut code = String::from(
        "/// Every file of web/dist: (path relative to it, bytes).\npub static FILES: &[(&str, &[u8])] = &[\n",
    );
    for f in &files {
        let rel = f.strip_prefix(&dist).expect("walked under dist").to_string_lossy().replace('\\', "/");
        println!("cargo:rerun-if-changed={}", f.display());
        code.push_str(&format!("    ({rel:?}, include_bytes!({:?})),\n", f.display().to_string()));
    }
    code.push_str("];\n");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("web_assets.rs");
    fs::write(out, code).expect("OUT_DIR is writable");
}
