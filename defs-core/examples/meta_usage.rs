//! Prints what a metadata DB holds, table by table (issue 26 item 3: what the bytes per entry
//! are made of). Usage: `cargo run -p defs-core --example meta_usage -- DIR/meta` on the meta
//! directory of a data dir no mount is using.

use std::error::Error;
use std::path::PathBuf;

use defs_core::meta::MetaDb;

fn main() -> Result<(), Box<dyn Error>> {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: meta_usage DIR/meta");
        std::process::exit(2);
    };
    let file = std::fs::metadata(dir.join(defs_core::meta::DB_FILE))?;
    let db = MetaDb::open(&dir)?;
    let usage = db.table_usage()?;
    let entries = usage
        .iter()
        .find(|u| u.name == "inodes")
        .map_or(1, |u| u.entries.max(1));
    println!(
        "{:<12} {:>9} {:>12} {:>12} {:>12} {:>8} {:>10}",
        "table", "entries", "stored B", "metadata B", "fragment B", "pages", "B/inode"
    );
    let mut pages = 0;
    for u in &usage {
        pages += u.pages;
        println!(
            "{:<12} {:>9} {:>12} {:>12} {:>12} {:>8} {:>10.0}",
            u.name,
            u.entries,
            u.stored_bytes,
            u.metadata_bytes,
            u.fragmented_bytes,
            u.pages,
            (u.pages * 4096) as f64 / entries as f64
        );
    }
    println!(
        "tables' pages: {} B ({:.0} B per inode); the file: {} B long, {} B allocated ({:.0} B per inode)",
        pages * 4096,
        (pages * 4096) as f64 / entries as f64,
        file.len(),
        std::os::unix::fs::MetadataExt::blocks(&file) * 512,
        (std::os::unix::fs::MetadataExt::blocks(&file) * 512) as f64 / entries as f64
    );
    Ok(())
}
