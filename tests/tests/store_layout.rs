//! One layout, checked: command-service refuses a data directory written in
//! another store layout (here, the first one: separate `orders`, `events` and
//! `commands` trees) with one line naming both formats and a non-zero exit,
//! and leaves the directory as it was; it converts nothing.

use e2e::{command_args, Service};

#[test]
fn a_directory_of_another_layout_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("command");
    {
        let db = sled::open(&data_dir).unwrap();
        db.open_tree("orders").unwrap().insert("o-1", "x").unwrap();
        db.open_tree("events")
            .unwrap()
            .insert(1u64.to_be_bytes(), "e")
            .unwrap();
        db.flush().unwrap();
    }
    let Err((logs, status)) = Service::try_spawn(
        "command-service",
        &command_args(&data_dir, "127.0.0.1:0"),
        &[],
    ) else {
        panic!("command-service started on a directory of another layout");
    };
    let status = status.expect("it exits");
    assert!(!status.success(), "{status:?}");
    let logs = logs.join("\n");
    assert!(logs.contains("earlier layout"), "{logs}");
    assert!(logs.contains("formats 3 and 4"), "{logs}");
    // Nothing was converted or dropped.
    let db = sled::open(&data_dir).unwrap();
    assert_eq!(
        db.open_tree("orders")
            .unwrap()
            .get("o-1")
            .unwrap()
            .as_deref(),
        Some(&b"x"[..])
    );
    assert_eq!(db.open_tree("events").unwrap().len(), 1);
}
