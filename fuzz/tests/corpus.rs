//! The committed corpus is what the generator writes, and every committed
//! input (seeds and regressions) passes its target without AFL++: a crash
//! a campaign found, once fixed and its input kept in `regressions/`, stays
//! fixed in the ordinary test run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lapwing_fuzz::{replay, seeds, TARGETS};

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `dir`'s files by name, or nothing when it does not exist.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("readable corpus file"))
        })
        .collect()
}

#[test]
fn committed_corpus_is_what_the_generator_writes() {
    let bless = std::env::var_os("LAPWING_FUZZ_BLESS").is_some();
    let all = seeds::all();
    for (target, _) in TARGETS {
        let dir = fuzz_dir().join("corpus").join(target);
        let want: BTreeMap<String, Vec<u8>> = all
            .iter()
            .filter(|s| s.target == *target)
            .map(|s| (s.name.clone(), s.bytes.clone()))
            .collect();
        assert!(!want.is_empty(), "no seeds for {target}");
        if bless {
            if dir.exists() {
                std::fs::remove_dir_all(&dir).unwrap();
            }
            std::fs::create_dir_all(&dir).unwrap();
            for (name, bytes) in &want {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
        }
        let have = files(&dir);
        assert!(
            have == want,
            "fuzz/corpus/{target} differs from lapwing_fuzz::seeds::all() (files {:?} vs {:?}); \
             regenerate it with LAPWING_FUZZ_BLESS=1 cargo test -p lapwing-fuzz --test corpus",
            have.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
        );
    }
}

#[test]
fn every_committed_input_passes_its_target() {
    if std::env::var_os("LAPWING_FUZZ_BLESS").is_some() {
        // The corpus is being rewritten by the other test right now.
        return;
    }
    for (target, run) in TARGETS {
        let dirs = [
            fuzz_dir().join("corpus").join(target),
            fuzz_dir().join("regressions").join(target),
        ];
        let dirs: Vec<PathBuf> = dirs.into_iter().filter(|d| d.is_dir()).collect();
        let inputs = replay::inputs(&dirs).unwrap();
        let failed = replay::failures(*run, &inputs).unwrap();
        assert!(failed.is_empty(), "{target}: these inputs fail: {failed:?}");
    }
}

#[test]
fn seeds_cover_every_frame_type() {
    let frame_seeds: Vec<_> = seeds::all()
        .into_iter()
        .filter(|s| s.target == "frame")
        .collect();
    for (i, name) in lapwing_fuzz::frame::TYPES.iter().enumerate() {
        assert!(
            frame_seeds
                .iter()
                .any(|s| usize::from(s.bytes[0] & 0x0f) % lapwing_fuzz::frame::TYPES.len() == i),
            "no seed for {name}"
        );
    }
}
