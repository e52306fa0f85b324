//! Writes the seed corpus (`defs_fuzz::seeds::all`) to `fuzz/seeds/<target>/<name>`, replacing
//! what is there: `ci/fuzz --write-seeds` runs it after a format change.

use std::path::Path;

defs_fuzz::track_allocations!();

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let seeds = defs_fuzz::seeds::all()?;
    for (target, _) in defs_fuzz::TARGETS {
        let dir = root.join(target);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
    }
    for s in &seeds {
        std::fs::write(root.join(s.target).join(&s.name), &s.bytes)?;
    }
    defs_fuzz::scratch::remove();
    println!("{} seeds written under {}", seeds.len(), root.display());
    Ok(())
}
