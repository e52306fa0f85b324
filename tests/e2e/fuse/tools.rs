//! The tools users run against the mount: cp -a, rsync (twice, -aHX --delete, --inplace), tar,
//! and an editor's save.

use std::fs;
use std::io::Write;
use std::process::Command;

use defs_tests::mount::{assert_same_tree, generate_tree, pseudo_random, run};

use super::mount;

#[test]
fn cp_a_of_a_generated_tree_of_2000_files_then_diff_r() {
    let m = mount!();
    let src = m.scratch().join("src");
    assert!(generate_tree(&src, 2000) >= 2000);
    let dst = m.path("copy");
    let t = std::time::Instant::now();
    run(Command::new("cp").arg("-a").arg(&src).arg(&dst));
    eprintln!("cp -a of 2000 files: {:?}", t.elapsed());
    assert_same_tree(&src, &dst);
    // Hard links stay hard links.
    let a = fs::metadata(dst.join("d27/s2/f00107.dat")).unwrap();
    let b = fs::metadata(dst.join("d27/s2/hard107")).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&a),
        std::os::unix::fs::MetadataExt::ino(&b)
    );
}

fn rsync_changes(args: &[&str], src: &std::path::Path, dst: &std::path::Path) -> String {
    let mut cmd = Command::new("rsync");
    cmd.args(args).arg("--itemize-changes");
    let mut s = src.as_os_str().to_owned();
    s.push("/");
    cmd.arg(s).arg(dst);
    run(&mut cmd)
}

#[test]
fn rsync_a_twice_changes_nothing_also_after_remount() {
    let mut m = mount!();
    let src = m.scratch().join("src");
    generate_tree(&src, 400);
    let dst = m.path("r");
    let first = rsync_changes(&["-a"], &src, &dst);
    assert!(!first.is_empty());
    assert_same_tree(&src, &dst);
    let second = rsync_changes(&["-a"], &src, &dst);
    assert_eq!(second, "", "the second rsync -a changed something");
    m.remount();
    let third = rsync_changes(&["-a"], &src, &dst);
    assert_eq!(third, "", "rsync -a after remount changed something");
}

#[test]
fn rsync_ahx_delete_and_inplace() {
    let m = mount!();
    let src = m.scratch().join("src");
    generate_tree(&src, 300);
    // An xattr to carry (-X).
    run(Command::new("setfattr")
        .args(["-n", "user.tag", "-v", "hello"])
        .arg(src.join("d00/s0/f00000.dat")));
    let dst = m.path("mirror");
    rsync_changes(&["-aHX", "--delete"], &src, &dst);
    assert_same_tree(&src, &dst);
    let tag = run(Command::new("getfattr")
        .args(["-n", "user.tag", "--only-values"])
        .arg(dst.join("d00/s0/f00000.dat")));
    assert_eq!(tag, "hello");
    // Change the source: delete, modify, add; --delete and --inplace follow.
    fs::remove_dir_all(src.join("d01")).unwrap();
    fs::write(src.join("d02/s2/f00002.dat"), pseudo_random(99, 5000)).unwrap();
    fs::write(src.join("new-file"), b"new").unwrap();
    rsync_changes(&["-aHX", "--delete"], &src, &dst);
    assert_same_tree(&src, &dst);
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(src.join("d13/s1/f00013.dat"))
        .unwrap();
    f.write_all(b"appended").unwrap();
    drop(f);
    rsync_changes(&["-a", "--inplace", "--no-whole-file"], &src, &dst);
    assert_same_tree(&src, &dst);
    assert_eq!(rsync_changes(&["-aHX", "--delete"], &src, &dst), "");
}

#[test]
fn tar_x_into_the_mount() {
    let m = mount!();
    let src = m.scratch().join("src");
    generate_tree(&src, 300);
    let tarball = m.scratch().join("t.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&tarball)
        .arg("-C")
        .arg(&src)
        .arg("."));
    let dst = m.path("untarred");
    fs::create_dir(&dst).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(&tarball)
        .arg("-C")
        .arg(&dst));
    assert_same_tree(&src, &dst);
}

#[test]
fn an_editor_style_save_replaces_the_file_atomically() {
    let m = mount!();
    let p = m.path("doc.txt");
    fs::write(&p, b"version 1\n").unwrap();
    let ino = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&p).unwrap());
    for v in 2..=5 {
        // Write a temp file, fsync it, rename it over the original (vim, gedit, …).
        let tmp = m.path(format!(".doc.txt.swp{v}"));
        let mut f = fs::File::create(&tmp).unwrap();
        f.write_all(format!("version {v}\n").as_bytes()).unwrap();
        f.sync_all().unwrap();
        drop(f);
        fs::rename(&tmp, &p).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), format!("version {v}\n"));
    }
    assert_ne!(
        std::os::unix::fs::MetadataExt::ino(&fs::metadata(&p).unwrap()),
        ino
    );
    let names: Vec<_> = fs::read_dir(m.mnt())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("doc.txt")]);
}
