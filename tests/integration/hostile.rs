//! Hostile plugins in every role. A source, a transform and a sink (the `hostile_source`,
//! `hostile` and `hostile_sink` fixtures) each wait where no Wasm code runs (a 600 s sleep,
//! a read from a server that accepts and never answers), spin, allocate, trap, lie about
//! their schema or flood the log, and the host must hold: the run ends within the plugin's
//! deadline + 1 s, or within 0.5 s of SIGTERM; it names the plugin; nothing of the failed
//! epoch is published, even when earlier epochs were; and the next run completes from the
//! state the failed one left, every row once.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::process::{Child, ChildStderr, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// Rows of the hostile source.
pub const ROWS: u64 = 100;

/// Where a hostile plugin sits in the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Source,
    Transform,
    Sink,
}

impl Role {
    /// How the host names the plugin in errors.
    fn label(self) -> &'static str {
        match self {
            Role::Source => "source \"orders\"",
            Role::Transform => "transform \"hostile\"",
            Role::Sink => "sink \"warehouse\"",
        }
    }
}

/// One hostile plugin: its role, its attack, the stage's grants and limits and the
/// attack's settings (each a block of TOML lines, possibly empty).
pub struct Attack<'a> {
    pub role: Role,
    pub attack: &'a str,
    pub stage: &'a str,
    pub config: &'a str,
}

/// The pipeline: the hostile source (`ROWS` rows, 10 a chunk) → [the hostile transform] →
/// the hostile sink, which keeps each committed epoch in `out/epoch-N.txt`. `attack` sits
/// in its role; the other plugins are honest. Epochs end every `every_rows` rows.
pub fn pipeline(attack: Option<&Attack>, every_rows: u64) -> String {
    let of = |role: Role| attack.filter(|a| a.role == role);
    let plugin = |name: &str| {
        let path = fixture(name);
        format!(
            "plugin = \"{}\"\nsha256 = \"{}\"\n",
            path.display(),
            sha256_file(&path)
        )
    };
    let (source_attack, source_stage, source_config) = match of(Role::Source) {
        Some(a) => (a.attack, a.stage, a.config),
        None => ("none", "", ""),
    };
    let transform = match of(Role::Transform) {
        Some(a) => format!(
            "[[transform]]\nname = \"hostile\"\n{}{}[transform.config]\nattack = \"{}\"\n{}\n",
            plugin("hostile"),
            a.stage,
            a.attack,
            a.config
        ),
        None => String::new(),
    };
    let (sink_attack, sink_stage, sink_config) = match of(Role::Sink) {
        Some(a) => (a.attack, a.stage, a.config),
        None => ("none", "", ""),
    };
    format!(
        r#"[pipeline]
name = "hostile"
on_error = "fail"

[checkpoint]
every_rows = {every_rows}

[retry]
max_attempts = 1

[[source]]
name = "orders"
{source_plugin}{source_stage}[source.config]
attack = "{source_attack}"
rows = {ROWS}
batch_rows = 10
{source_config}
{transform}[[sink]]
name = "warehouse"
{sink_plugin}fs = ["out:rw"]
{sink_stage}[sink.config]
dir = "out"
attack = "{sink_attack}"
{sink_config}"#,
        source_plugin = plugin("hostile_source"),
        sink_plugin = plugin("hostile_sink"),
    )
}

/// A scratch directory for the pipeline, with its (empty) output directory.
pub fn scratch() -> Scratch {
    let scratch = Scratch::new();
    std::fs::create_dir_all(scratch.path("out")).unwrap();
    scratch
}

/// The ids the hostile sink has published, in the order of its epochs; each epoch's file
/// holds them in the order written.
pub fn published(scratch: &Scratch) -> Vec<i64> {
    let mut files: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(scratch.path("out"))
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name()?.to_str()?.to_string();
            let epoch = name
                .strip_prefix("epoch-")?
                .strip_suffix(".txt")?
                .parse()
                .ok()?;
            Some((epoch, path))
        })
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|(_, path)| {
            std::fs::read_to_string(path)
                .unwrap()
                .lines()
                .map(|l| l.parse::<i64>().unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The pipeline without any attack runs to the end from the state the failed run left,
/// and then every row has been published exactly once, in order.
pub fn assert_clean_run_completes(scratch: &Scratch) {
    scratch.write("pipeline.toml", pipeline(None, 20));
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    let all: Vec<i64> = (1..=ROWS as i64).collect();
    assert_eq!(published(scratch), all, "every row once, in order");
}

/// One run of the pipeline with `attack`, epochs of `every_rows` rows, to its end.
fn run_once(scratch: &Scratch, attack: &Attack, every_rows: u64, args: &[&str]) -> Output {
    scratch.write("pipeline.toml", pipeline(Some(attack), every_rows));
    let mut command = vec!["run", "pipeline.toml"];
    command.extend_from_slice(args);
    scratch.host(&command)
}

/// A run caught in the act: the hostile plugin has logged that its attack began.
pub struct Attacking {
    pub child: Child,
    stderr: BufReader<ChildStderr>,
    seen: String,
    /// When the attack began, as the test saw its log line.
    pub began: Instant,
}

impl Attacking {
    /// Runs the hostile pipeline with `attack`, epochs of `every_rows` rows.
    pub fn start(scratch: &Scratch, attack: &Attack, every_rows: u64) -> Self {
        scratch.write("pipeline.toml", pipeline(Some(attack), every_rows));
        Self::spawn(scratch)
    }

    /// Runs `pipeline.toml` of `scratch`, as written, until its attack begins.
    pub fn spawn(scratch: &Scratch) -> Self {
        let mut child = scratch
            .command(&["run", "pipeline.toml", "--log", "info"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let mut attacking = Attacking {
            child,
            stderr,
            seen: String::new(),
            began: Instant::now(),
        };
        loop {
            let mut line = String::new();
            let n = attacking.stderr.read_line(&mut line).unwrap();
            assert_ne!(
                n, 0,
                "the host ended before the attack began: {}",
                attacking.seen
            );
            attacking.seen.push_str(&line);
            if line.contains("attacking: ") {
                attacking.began = Instant::now();
                return attacking;
            }
        }
    }

    /// Sends `signal` (`TERM`, `INT`, `KILL`) to the host.
    pub fn signal(&self, signal: &str) {
        let kill = std::process::Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
    }

    /// Waits for the host to end, at most `limit`; its exit code and all it printed to
    /// stderr.
    pub fn finish(self, limit: Duration) -> Output {
        let Attacking {
            mut child,
            mut stderr,
            mut seen,
            ..
        } = self;
        let rest = std::thread::spawn(move || {
            let mut rest = String::new();
            stderr.read_to_string(&mut rest).map(|_| rest)
        });
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > limit {
                child.kill().unwrap();
                child.wait().unwrap();
                panic!("the host still ran {limit:?} into the attack: {seen}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        seen.push_str(&rest.join().unwrap().unwrap());
        assert_no_secret(&seen);
        Output {
            code: status.code().unwrap_or(-1),
            stdout: String::new(),
            stderr: seen,
        }
    }
}

/// A loopback server that accepts every connection and never answers, as a stalled
/// database does; it holds the connections until dropped.
pub struct StalledServer {
    pub port: u16,
    _accepting: std::thread::JoinHandle<()>,
}

impl StalledServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepting = std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                match stream {
                    Ok(s) => held.push(s),
                    Err(_) => return,
                }
            }
        });
        StalledServer {
            port,
            _accepting: accepting,
        }
    }
}

/// The run failed as a run: exit 1, an `error:` line naming `role`'s plugin, no panic.
fn assert_failed_naming(run: &Output, role: Role, what: &str) {
    assert_eq!(run.code, 1, "the run fails, the host survives: {run:?}");
    let error = run
        .stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {}", run.stderr));
    assert!(
        error.contains(role.label()) && error.contains(what),
        "the error names {} and {what:?}: {error}",
        role.label()
    );
    // The host itself did not panic (a plugin's panic is reported in the error line).
    assert!(
        !run.stderr.lines().any(|l| l.starts_with("thread '")),
        "{}",
        run.stderr
    );
}

/// For both ways of waiting outside Wasm code, the plugin in `role` is stopped at its 2 s
/// deadline: the run ends within 3 s of the attack, publishes nothing, and a clean run
/// then completes.
fn waiting_is_stopped_at_the_deadline(role: Role) {
    let server = StalledServer::start();
    for stall in ["sleep", "stalled-socket"] {
        let scratch = scratch();
        let grants = format!("deadline = \"2s\"\nnet = [\"127.0.0.1:{}\"]\n", server.port);
        let config = format!("port = {}\n", server.port);
        let attack = Attack {
            role,
            attack: stall,
            stage: &grants,
            config: &config,
        };
        let attacking = Attacking::start(&scratch, &attack, 1_000_000);
        let began = attacking.began;
        let run = attacking.finish(Duration::from_secs(30));
        let took = began.elapsed();
        assert!(
            took < Duration::from_secs(3),
            "{role:?} {stall}: the run ended {took:?} after the attack began, past its deadline + 1 s"
        );
        assert_failed_naming(&run, role, "exceeded its deadline of 2s");
        assert!(published(&scratch).is_empty(), "{role:?} {stall}");
        assert_clean_run_completes(&scratch);
    }
}

#[test]
fn a_source_waiting_in_a_sleep_or_on_a_stalled_socket_is_stopped_at_its_deadline() {
    waiting_is_stopped_at_the_deadline(Role::Source);
}

#[test]
fn a_transform_waiting_in_a_sleep_or_on_a_stalled_socket_is_stopped_at_its_deadline() {
    waiting_is_stopped_at_the_deadline(Role::Transform);
}

#[test]
fn a_sink_waiting_in_a_sleep_or_on_a_stalled_socket_is_stopped_at_its_deadline() {
    waiting_is_stopped_at_the_deadline(Role::Sink);
}

/// SIGTERM while every role waits in a sleep or on a stalled socket (deadline 60 s): the
/// run ends within 0.5 s of the signal, publishes nothing, and a clean run completes.
#[test]
fn sigterm_stops_a_waiting_plugin_in_any_role_within_half_a_second() {
    let server = StalledServer::start();
    for role in [Role::Source, Role::Transform, Role::Sink] {
        for stall in ["sleep", "stalled-socket"] {
            let scratch = scratch();
            let grants = format!(
                "deadline = \"60s\"\nnet = [\"127.0.0.1:{}\"]\n",
                server.port
            );
            let config = format!("port = {}\n", server.port);
            let attack = Attack {
                role,
                attack: stall,
                stage: &grants,
                config: &config,
            };
            let attacking = Attacking::start(&scratch, &attack, 1_000_000);
            // Let the plugin settle into its wait.
            std::thread::sleep(Duration::from_millis(200));
            let signalled = Instant::now();
            attacking.signal("TERM");
            let run = attacking.finish(Duration::from_secs(10));
            let took = signalled.elapsed();
            assert!(
                took < Duration::from_millis(500),
                "{role:?} {stall}: the run ended {took:?} after SIGTERM"
            );
            assert_eq!(run.code, 1, "{role:?} {stall}: {run:?}");
            assert!(
                run.stderr.contains(&format!(
                    "error: the run was cancelled while {}",
                    role.label()
                )),
                "{role:?} {stall}: the error names the plugin that was running: {}",
                run.stderr
            );
            assert!(published(&scratch).is_empty(), "{role:?} {stall}");
            assert_clean_run_completes(&scratch);
        }
    }
}

/// The attacks of computing plugins, from a source and from a sink: each is stopped by
/// the limit it runs into, named in the error.
#[test]
fn a_source_or_a_sink_that_spins_allocates_or_traps_is_contained() {
    let cases = [
        (
            "infinite-loop",
            "deadline = \"1s\"\n",
            "exceeded its deadline of 1s",
        ),
        (
            "allocate",
            "memory = \"64MiB\"\n",
            "hit its memory limit of 64 MiB",
        ),
        ("trap", "", "trapped"),
    ];
    for role in [Role::Source, Role::Sink] {
        for (attack, stage, what) in cases {
            let scratch = scratch();
            let attack_spec = Attack {
                role,
                attack,
                stage,
                config: "",
            };
            let attacking = Attacking::start(&scratch, &attack_spec, 1_000_000);
            let began = attacking.began;
            let run = attacking.finish(Duration::from_secs(20));
            assert!(
                began.elapsed() < Duration::from_secs(3),
                "{role:?} {attack}: took {:?}",
                began.elapsed()
            );
            assert_failed_naming(&run, role, what);
            assert!(published(&scratch).is_empty(), "{role:?} {attack}");
            assert_clean_run_completes(&scratch);
        }
    }
}

#[test]
fn a_source_that_returns_an_undeclared_column_breaks_the_contract() {
    let scratch = scratch();
    let attack = Attack {
        role: Role::Source,
        attack: "wrong-schema",
        stage: "",
        config: "",
    };
    let run = run_once(&scratch, &attack, 1_000_000, &[]);
    assert_failed_naming(&run, Role::Source, "broke the plugin contract");
    assert!(run.stderr.contains("smuggled"), "{}", run.stderr);
    assert!(published(&scratch).is_empty());
    assert_clean_run_completes(&scratch);
}

/// With epochs of 20 rows, an attack on row 65 lands in the fourth epoch, after the
/// barriers of the first three went through: what was committed stays, nothing of the
/// failed epoch is published (the sink had already been handed rows 61 to 64), and the
/// next run completes with every row once.
#[test]
fn an_attack_after_committed_epochs_publishes_nothing_of_its_own_epoch() {
    for role in [Role::Source, Role::Transform, Role::Sink] {
        let scratch = scratch();
        let attack = Attack {
            role,
            attack: "trap",
            stage: "",
            config: "at_row = 65\n",
        };
        let run = run_once(&scratch, &attack, 20, &[]);
        assert_failed_naming(&run, role, "trapped");
        // The plugin's panic message says why, and where.
        assert!(
            run.stderr.contains(
                "after it panicked: the hostile plugin breaks down as it was asked to (at "
            ) && run.stderr.contains("stall.rs:"),
            "{role:?}: {}",
            run.stderr
        );
        let kept = published(&scratch);
        assert!(
            kept.iter().all(|id| *id <= 60),
            "{role:?}: rows of the failed epoch were published: {kept:?}"
        );
        assert_eq!(
            kept,
            (1..=kept.len() as i64).collect::<Vec<_>>(),
            "{role:?}: whole epochs, in order"
        );
        assert_eq!(kept.len() % 20, 0, "{role:?}: whole epochs only");
        if role == Role::Sink {
            // The sink commits each barrier before it takes the next batch.
            assert_eq!(kept.len(), 60, "the three epochs before the attack stay");
        }
        assert_clean_run_completes(&scratch);
    }
}

/// A plugin logs 5000 lines through the host and prints 5000 to stdout in one call: the
/// host passes at most its rate (200 lines a second per output) and says how many it
/// dropped, so shown + dropped = 5000 for each.
#[test]
fn a_plugin_flooding_the_log_is_rate_limited_and_the_drops_are_counted() {
    let scratch = scratch();
    let attack = Attack {
        role: Role::Source,
        attack: "log-flood",
        stage: "",
        config: "lines = 5000\n",
    };
    let started = Instant::now();
    let run = run_once(&scratch, &attack, 1_000_000, &["--log", "info"]);
    let seconds = started.elapsed().as_secs() + 1;
    run.assert_ok();
    assert_eq!(published(&scratch).len(), ROWS as usize);
    for (marker, output) in [("flood line ", "log"), ("flood stdout ", "stdout")] {
        let shown = run.stderr.lines().filter(|l| l.contains(marker)).count() as u64;
        assert!(
            shown <= 200 * seconds && shown >= 199,
            "{output}: {shown} lines shown in about {seconds} s"
        );
        let dropped: u64 = run
            .stderr
            .lines()
            .filter_map(|l| {
                let rest = &l[l.find("dropped ")? + "dropped ".len()..];
                let (n, rest) = rest.split_once(' ')?;
                rest.starts_with(&format!("{output} lines"))
                    .then(|| n.parse::<u64>().ok())?
            })
            .sum();
        assert_eq!(
            shown + dropped,
            5000,
            "{output}: {shown} shown and {dropped} reported dropped"
        );
    }
}
