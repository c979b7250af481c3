//! Property tests of the rules parser: an uploaded rules file is operator
//! input (UploadRules); whatever it holds, the parser answers rules or an
//! error naming a key — never a panic.

use proptest::prelude::*;
use timesquare_domain::rules::Rules;

const RULES: &str = include_str!("../../../configs/game-rules.yaml");

/// The real rules file with one line changed: removed, duplicated, its
/// value replaced by a number, a word or garbage, or its indentation moved.
fn mutated() -> impl Strategy<Value = String> {
    let lines: Vec<&'static str> = RULES.lines().collect();
    let n = lines.len();
    (0..n, 0u8..6, any::<i64>(), ".{0,12}").prop_map(move |(i, how, number, text)| {
        let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        let line = out[i].clone();
        let key = line.split(':').next().unwrap_or_default().to_owned();
        match how {
            0 => {
                out.remove(i);
            }
            1 => out.insert(i, line),
            2 => out[i] = format!("{key}: {number}"),
            3 => out[i] = format!("{key}: {text}"),
            4 => out[i] = format!("  {line}"),
            _ => out[i] = line.trim_start().to_owned(),
        }
        out.join("\n")
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

    #[test]
    fn a_mutated_rules_file_parses_or_names_a_key(text in mutated()) {
        if let Err(e) = Rules::parse(&text) {
            prop_assert!(!e.key.is_empty() || !e.reason.is_empty());
            prop_assert!(e.reason.len() < 4_096, "a reason of {} bytes", e.reason.len());
        }
    }

    #[test]
    fn any_text_parses_or_is_refused(text in ".{0,400}") {
        let _ = Rules::parse(&text);
    }
}
