//! The README's tour, run as typed: every ```` ```sh ```` block from
//! "## Using it" up to "## How it works", line by line and in order, in one
//! bash, against a fresh fleet — so the tour cannot rot.
//!
//! How a line is judged (the README's own notation, nothing hidden):
//! - a command succeeds (exit 0), unless the lines under it show an error
//!   (`#   error: Code: …` or `#   {"error":{"code":"Code"…`) or its comment
//!   starts with "refused": then it must fail, with that gRPC code and the
//!   `rule:` shown, if any;
//! - a command whose comment says "Ctrl-C" runs until it is interrupted
//!   after a few seconds (a live view);
//! - a block right after `<!-- tour: skip (why) -->` is not run (benchmarks);
//!   after `<!-- tour: needs grpcurl -->`, only where that tool is installed.
//!
//! The fleet is the test kit's (free ports, its own Redis); the tour's
//! `target/debug/…` and `configs/…` paths point at this build and this
//! repository from a scratch working directory.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use allies_e2e::{Fleet, SERVICES};

#[derive(Debug, Default, PartialEq)]
struct Step {
    /// The README line the command starts on.
    line: usize,
    command: String,
    /// The command must fail.
    refused: bool,
    /// The gRPC code (or `Local`, `Usage`) the failure must name.
    code: Option<String>,
    /// The broken rule the failure must name.
    rule: Option<String>,
    /// A live view: interrupted after a few seconds.
    live: bool,
}

/// The comment of a command line: the text after the first ` #` outside
/// quotes (None when there is none).
fn split_comment(line: &str) -> (&str, Option<&str>) {
    let (mut single, mut double) = (false, false);
    let bytes = line.as_bytes();
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && (i == 0 || bytes[i - 1] == b' ') => {
                return (line[..i].trim_end(), Some(line[i + 1..].trim()));
            }
            _ => {}
        }
    }
    (line.trim_end(), None)
}

/// `a; b` as two commands (outside quotes), so each is judged.
fn split_commands(command: &str) -> Vec<String> {
    let (mut single, mut double) = (false, false);
    let mut parts = vec![String::new()];
    for c in command.chars() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            ';' if !single && !double => {
                parts.push(String::new());
                continue;
            }
            _ => {}
        }
        parts.last_mut().expect("one part").push(c);
    }
    parts.into_iter().map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect()
}

/// The tour's steps, and the blocks left out (with why).
fn steps(readme: &str, has_tool: impl Fn(&str) -> bool) -> (Vec<Step>, Vec<String>) {
    let mut steps: Vec<Step> = Vec::new();
    let mut skipped = Vec::new();
    let mut in_tour = false;
    let mut in_block = false;
    let mut run_block = true;
    let mut marker: Option<String> = None;
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in readme.lines().enumerate() {
        let number = i + 1;
        if !in_block {
            if raw.starts_with("## ") {
                in_tour = raw.starts_with("## Using it") || (in_tour && !raw.starts_with("## How it works"));
            }
            if !in_tour {
                continue;
            }
            if let Some(m) = raw.trim().strip_prefix("<!-- tour:") {
                marker = Some(m.trim_end_matches("-->").trim().to_owned());
            } else if raw.trim() == "```sh" {
                in_block = true;
                run_block = match marker.take() {
                    None => true,
                    Some(m) if m.starts_with("needs ") => {
                        let tool = m["needs ".len()..].split_whitespace().next().unwrap_or_default().to_owned();
                        let ok = has_tool(&tool);
                        if !ok {
                            skipped.push(format!("line {number}: needs {tool}, not installed"));
                        }
                        ok
                    }
                    Some(m) => {
                        skipped.push(format!("line {number}: {m}"));
                        false
                    }
                };
            } else if !raw.trim().is_empty() {
                marker = None;
            }
            continue;
        }
        if raw.trim() == "```" {
            in_block = false;
            continue;
        }
        if !run_block {
            continue;
        }
        let text = raw.trim();
        if text.is_empty() {
            continue;
        }
        if let Some(note) = text.strip_prefix('#') {
            // What the command above prints.
            let Some(step) = steps.last_mut() else { continue };
            let note = note.trim();
            if let Some(rest) = note.strip_prefix("error: ") {
                step.refused = true;
                step.code = rest.split(':').next().map(str::to_owned);
            } else if let Some(rest) = note.strip_prefix("{\"error\":{\"code\":\"") {
                step.refused = true;
                step.code = rest.split('"').next().map(str::to_owned);
            } else if let Some(rest) = note.strip_prefix("rule: ") {
                step.rule = rest.split_whitespace().next().map(str::to_owned);
            }
            continue;
        }
        let (start, so_far) = match pending.take() {
            Some((start, text)) => (start, format!("{text} {}", raw.trim())),
            None => (number, raw.trim().to_owned()),
        };
        if let Some(open) = so_far.strip_suffix('\\') {
            pending = Some((start, open.trim_end().to_owned()));
            continue;
        }
        let (command, comment) = split_comment(&so_far);
        let comment = comment.unwrap_or_default();
        let refused = comment.starts_with("refused");
        let live = comment.contains("Ctrl-C");
        for command in split_commands(command) {
            steps.push(Step { line: start, command, refused, live, ..Step::default() });
        }
    }
    (steps, skipped)
}

/// The bash script: each step sourced in the same shell (variables and
/// background jobs carry over), its output and exit status kept per step;
/// the first step that does not end as the README says stops the run.
fn script(steps: &[Step], dir: &Path) -> String {
    let mut s = String::from("set -a\n");
    for (n, step) in steps.iter().enumerate() {
        let file = dir.join(format!("{n}.sh"));
        let body = if step.live {
            // A live view: what an interrupt ends; its exit on the signal is fine.
            format!(
                "timeout -s INT 4 bash -c {}; live=$?; [ $live -eq 0 ] || [ $live -eq 124 ] || [ $live -eq 130 ]\n",
                shell_quote(&step.command)
            )
        } else {
            format!("{}\n", step.command)
        };
        std::fs::write(&file, body).expect("write a step");
        let ok = if step.refused { "[ $rc -ne 0 ]" } else { "[ $rc -eq 0 ]" };
        s.push_str(&format!(
            ". '{f}' >'{d}/{n}.out' 2>'{d}/{n}.err' </dev/null; rc=$?; echo $rc >'{d}/{n}.rc'; {ok} || exit 3\n",
            f = file.display(),
            d = dir.display(),
        ));
    }
    s.push_str("wait\n");
    s
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

#[test]
fn the_notation_says_what_each_line_must_do() {
    let readme = "## Using it\n\
        <!-- tour: skip (minutes) -->\n```sh\nslow\n```\n\
        ```sh\nA=x   # a variable\n$A go 'a # b'; $A two\n#   printed\n\
        $A bad --x\n#   error: InvalidArgument: nope\n#     rule: NO_GOOD (x)\n\
        $A place 1 # refused: a flag is off\n$A watch   # live; Ctrl-C stops\n\
        grpcurl \\\n  -d '{}' x\n```\n\
        <!-- tour: needs grpcurl -->\n```sh\ngrpcurl list\n```\n## How it works\n```sh\nafter\n```\n";
    let (steps, skipped) = steps(readme, |_| false);
    let commands: Vec<&str> = steps.iter().map(|s| s.command.as_str()).collect();
    assert_eq!(
        commands,
        ["A=x", "$A go 'a # b'", "$A two", "$A bad --x", "$A place 1", "$A watch", "grpcurl -d '{}' x"]
    );
    assert_eq!(steps[3].code.as_deref(), Some("InvalidArgument"));
    assert_eq!(steps[3].rule.as_deref(), Some("NO_GOOD"));
    assert!(steps[3].refused && steps[4].refused && !steps[1].refused && !steps[2].refused);
    assert!(steps[5].live && !steps[4].live);
    assert_eq!(steps[6].line, 15, "a continued command counts from its first line");
    assert_eq!(skipped, ["line 3: skip (minutes)", "line 19: needs grpcurl, not installed"]);
}

#[test]
fn the_readme_tour_runs_top_to_bottom_as_typed() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let (steps, skipped) = steps(&readme, on_path);
    assert!(steps.len() > 100, "the tour has {} steps: did its headings change?", steps.len());

    // Waves play fast; `admin` is the README's first admin, as with dev/up.
    let fleet = Fleet::start(&[
        ("TIMESQUARE_TICK_MS", "2"),
        ("TIMESQUARE_SETTLE_MS", "20"),
        ("GUARDIAN_BOOTSTRAP_ADMINS", "admin"),
    ]);
    let work = tempfile::tempdir().expect("tempdir");
    let bin = allies_testkit::binary("allies").parent().expect("bin dir").to_path_buf();
    std::fs::create_dir_all(work.path().join("target")).expect("target/");
    std::os::unix::fs::symlink(&bin, work.path().join("target/debug")).expect("target/debug");
    std::os::unix::fs::symlink(root.join("configs"), work.path().join("configs")).expect("configs");
    let steps_dir = work.path().join(".tour");
    std::fs::create_dir_all(&steps_dir).expect("steps dir");
    std::fs::write(steps_dir.join("tour.sh"), script(&steps, &steps_dir)).expect("script");

    let mut bash = Command::new("bash");
    bash.arg(steps_dir.join("tour.sh"))
        .current_dir(work.path())
        .env("ALLIES_HOME", work.path().join("home"))
        .env_remove("ALLIES_PROFILE")
        .env_remove("ALLIES_TOKEN")
        .env_remove("ALLIES_PASSWORD")
        .env("REDIS_URL", fleet.redis_url())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(steps_dir.join("bash.out")).expect("bash.out"))
        .stderr(std::fs::File::create(steps_dir.join("bash.err")).expect("bash.err"))
        .process_group(0);
    for name in SERVICES {
        bash.env(format!("ALLIES_{}", name.to_uppercase()), fleet.endpoint(name));
    }
    let started = Instant::now();
    let mut child = bash.spawn().expect("bash");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait bash") {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(420) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // The tour's background jobs (and a stuck step) end with it: the whole
    // process group bash leads. `--` before the negative id: procps's kill
    // read `kill -KILL -<pgid>` as kill(-1, SIGKILL) — every process the user
    // may signal (strace showed it; it took the test harness down with it).
    let group = child.id();
    assert!(group > 1, "a process group of our own");
    let _ = Command::new("kill").args(["-s", "KILL", "--", &format!("-{group}")]).status();
    let _ = child.wait();
    let script_err = std::fs::read_to_string(steps_dir.join("bash.err")).unwrap_or_default();

    let read = |n: usize, ext: &str| std::fs::read_to_string(steps_dir.join(format!("{n}.{ext}"))).unwrap_or_default();
    let mut problems = Vec::new();
    let mut ran = 0;
    for (n, step) in steps.iter().enumerate() {
        let rc = read(n, "rc");
        if rc.is_empty() {
            if problems.is_empty() {
                problems.push(format!(
                    "README line {}: `{}` did not end (the tour stopped here{})",
                    step.line,
                    step.command,
                    if status.is_none() { ", out of time" } else { "" }
                ));
            }
            break;
        }
        ran += 1;
        let rc: i32 = rc.trim().parse().unwrap_or(-1);
        let (out, err) = (read(n, "out"), read(n, "err"));
        // The transcript (shown with --nocapture or nextest's --success-output).
        println!("$ {}   (README line {}, exit {rc})\n{}\n{}", step.command, step.line, tail(&out), tail(&err));
        let said = || format!("\n--- stdout\n{}\n--- stderr\n{}", tail(&out), tail(&err));
        if step.refused != (rc != 0) {
            let want = if step.refused { "to be refused" } else { "to succeed" };
            problems.push(format!(
                "README line {}: `{}` was meant {want}; exit {rc}{}",
                step.line,
                step.command,
                said()
            ));
            continue;
        }
        if let Some(code) = &step.code
            && !err.contains(&format!("error: {code}:"))
            && !err.contains(&format!("\"code\":\"{code}\""))
        {
            problems.push(format!("README line {}: `{}` should fail with {code}{}", step.line, step.command, said()));
        }
        if let Some(rule) = &step.rule
            && !err.contains(rule.as_str())
        {
            problems.push(format!("README line {}: `{}` should name rule {rule}{}", step.line, step.command, said()));
        }
    }
    eprintln!(
        "the README tour: {ran} of {} steps ran in {:.1} s; blocks not run: {}",
        steps.len(),
        started.elapsed().as_secs_f64(),
        if skipped.is_empty() { "none".to_owned() } else { skipped.join("; ") }
    );
    assert!(problems.is_empty(), "the README tour:\n{}\n(bash: {})", problems.join("\n\n"), tail(&script_err));
    assert_eq!(ran, steps.len(), "every step of the tour ran");
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(25)..].join("\n")
}
