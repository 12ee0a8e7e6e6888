//! Replaying inputs without AFL++: what a target binary does when it was not
//! built by `cargo afl`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Files named by `paths`, with directories expanded one level (a corpus or
/// crash directory), sorted so a run is reproducible.
pub fn inputs(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut entries = std::fs::read_dir(path)?
                .map(|entry| entry.map(|e| e.path()))
                .collect::<std::io::Result<Vec<_>>>()?;
            entries.retain(|p| p.is_file() && !is_readme(p));
            entries.sort();
            files.extend(entries);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// AFL++ writes a README.txt into its crash directories; it is not an input.
fn is_readme(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == "README.txt")
}

/// Runs `target` on every input and returns the ones that panicked.
pub fn failures(target: crate::Target, files: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut failed = Vec::new();
    for file in files {
        let data = std::fs::read(file)?;
        if catch_unwind(AssertUnwindSafe(|| target(&data))).is_err() {
            failed.push(file.clone());
        }
    }
    Ok(failed)
}

/// `main` of a target binary in a plain build: replays the files and
/// directories given as arguments (or standard input when there are none)
/// and exits non-zero if any input panicked, naming it.
pub fn main(target: crate::Target) -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if args.is_empty() {
        let mut data = Vec::new();
        if let Err(e) = std::io::Read::read_to_end(&mut std::io::stdin(), &mut data) {
            eprintln!("cannot read standard input: {e}");
            return ExitCode::FAILURE;
        }
        target(&data);
        return ExitCode::SUCCESS;
    }
    let result = inputs(&args).and_then(|files| Ok((files.len(), failures(target, &files)?)));
    match result {
        Ok((count, failed)) if failed.is_empty() => {
            eprintln!("{count} inputs replayed, none failed");
            ExitCode::SUCCESS
        }
        Ok((count, failed)) => {
            for file in &failed {
                eprintln!("FAILED: {}", file.display());
            }
            eprintln!("{count} inputs replayed, {} failed", failed.len());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("cannot read inputs: {e}");
            ExitCode::FAILURE
        }
    }
}
