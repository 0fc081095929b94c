//! One writer per pipeline state: while a run holds the state lock, a second `run`, a
//! `dlq replay` and a `state reset` of the same pipeline exit 2 naming the holder, and
//! after the holder is killed with SIGKILL the lock is free at once.

use std::time::Duration;

use crate::hostile::{self, Attack, Attacking, Role};

#[test]
fn a_second_writer_is_refused_while_a_run_holds_the_state_and_the_lock_dies_with_it() {
    let scratch = hostile::scratch();
    // A first run that stays inside its source, holding the lock.
    let attack = Attack {
        role: Role::Source,
        attack: "sleep",
        stage: "deadline = \"60s\"\n",
        config: "at_row = 41\n",
    };
    let first = Attacking::start(&scratch, &attack, 20);
    let pid = first.child.id();

    for command in [
        &["run", "pipeline.toml"][..],
        &["dlq", "replay", "pipeline.toml"],
        &["state", "reset", "pipeline.toml", "--yes"],
    ] {
        let second = scratch.host(command);
        assert_eq!(second.code, 2, "{command:?}: {second:?}");
        let error = second.stderr.trim();
        assert!(
            error.contains("pipeline `hostile` is in use")
                && error.contains("`host run pipeline.toml`")
                && error.contains(&format!("pid {pid} on "))
                && error.contains(", started 20"),
            "{command:?}: the error names the holder: {error}"
        );
    }

    first.signal("KILL");
    let killed = first.finish(Duration::from_secs(10));
    assert_eq!(killed.code, -1, "killed by the signal: {killed:?}");
    let kept = hostile::published(&scratch);
    assert!(
        kept.len() <= 40 && kept.len().is_multiple_of(20),
        "whole epochs before the sleep: {kept:?}"
    );

    // No lock outlives its process: the next run takes it and completes.
    hostile::assert_clean_run_completes(&scratch);
}
