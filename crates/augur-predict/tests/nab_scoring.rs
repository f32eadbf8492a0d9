//! NAB scoring: the rules on small synthetic corpora, the threshold sweep against brute force,
//! the readers and writer on temporary files, and the real corpus when `../shared/data/nab`
//! is present.

use std::fs;
use std::path::Path;

use augur_predict::nab::{
    format_timestamp, parse_timestamp, probationary_period, read_corpus, score_at_threshold,
    score_corpus, write_results, LabeledSeries, Profile, ProfileScore, NO_DETECTION_THRESHOLD,
    PROFILES,
};
use proptest::prelude::*;

const STANDARD: &Profile = &PROFILES[0];

/// A series of `rows` rows five minutes apart, with the given windows.
fn series(name: &str, rows: usize, windows: &[(usize, usize)]) -> LabeledSeries {
    LabeledSeries {
        name: name.to_owned(),
        timestamps: (0..rows).map(|i| 1_400_000_000 + 300 * i as i64).collect(),
        values: vec![0.0; rows],
        windows: windows.to_vec(),
    }
}

/// Scores that are 1 at `rows` and 0 elsewhere.
fn spikes(len: usize, rows: &[usize]) -> Vec<f64> {
    let mut scores = vec![0.0; len];
    for &r in rows {
        scores[r] = 1.0;
    }
    scores
}

/// Three series of 1000 rows (probation 150): one with two windows, one with one, one with none.
/// A perfect detector's scores: a spike at the first row of every window.
fn perfect_scores(corpus: &[LabeledSeries]) -> Vec<Vec<f64>> {
    corpus
        .iter()
        .map(|s| {
            let firsts: Vec<usize> = s.windows.iter().map(|w| w.0).collect();
            spikes(s.timestamps.len(), &firsts)
        })
        .collect()
}

fn corpus() -> Vec<LabeledSeries> {
    vec![
        series("realA/one.csv", 1000, &[(300, 349), (700, 749)]),
        series("realA/two.csv", 1000, &[(500, 519)]),
        series("realB/none.csv", 1000, &[]),
    ]
}

/// Scores one series at threshold 0.5.
fn score_one(s: &LabeledSeries, scores: Vec<f64>, profile: &Profile) -> ProfileScore {
    score_at_threshold(std::slice::from_ref(s), &[scores], profile, 0.5)
}

fn assert_close(actual: f64, expected: f64, what: &str) {
    assert!(
        (actual - expected).abs() < 1e-9,
        "{what}: {actual} != {expected}"
    );
}

#[test]
fn never_firing_detector_scores_zero_under_every_profile() {
    let corpus = corpus();
    let scores: Vec<Vec<f64>> = corpus
        .iter()
        .map(|s| vec![0.0; s.timestamps.len()])
        .collect();
    for profile in &PROFILES {
        let result = score_corpus(&corpus, &scores, profile).unwrap();
        assert_eq!(result.normalized, 0.0, "{}", profile.name);
        assert_eq!(result.raw, result.null, "{}", profile.name);
        assert_eq!(result.null, -profile.a_fn * 3.0, "{}", profile.name);
        assert_eq!(result.perfect, profile.a_tp * 3.0, "{}", profile.name);
        assert_eq!(result.threshold, NO_DETECTION_THRESHOLD);
        assert_eq!((result.tp, result.fp, result.fn_), (0, 0, 3));
    }
}

#[test]
fn perfect_detector_scores_one_hundred_under_every_profile() {
    let corpus = corpus();
    let scores: Vec<Vec<f64>> = perfect_scores(&corpus);
    for profile in &PROFILES {
        let result = score_corpus(&corpus, &scores, profile).unwrap();
        assert_close(result.normalized, 100.0, profile.name);
        assert_close(result.raw, result.perfect, profile.name);
        assert_eq!(result.threshold, 1.0);
        assert_eq!((result.tp, result.fp, result.fn_), (3, 0, 0));
    }
}

#[test]
fn matches_a_hand_computed_sweep_score() {
    // 100 rows: probation 15. Window rows 40..=49 (width 10). A detection at row 45 sits at
    // position -(49 - 45 + 1) / 10 = -0.5; a false positive at row 60 at (60 - 49) / 9.
    let s = series("cat/hand.csv", 100, &[(40, 49)]);
    let scores = spikes(100, &[45, 60]);
    let result = score_at_threshold(&[s], &[scores], STANDARD, 0.5);
    let sigmoid = |x: f64| 2.0 / (1.0 + (5.0 * x).exp()) - 1.0;
    let expected = sigmoid(-0.5) / sigmoid(-1.0) + 0.11 * sigmoid(11.0 / 9.0);
    assert_close(result.raw, expected, "raw");
    // The same value as NAB's Python, written out: 0.8597925669097837 - 0.10951310130369775.
    assert_close(result.raw, 0.750_279_465_606_085_9, "raw vs NAB");
    assert_eq!((result.tp, result.fp, result.fn_), (1, 1, 0));
}

#[test]
fn early_detection_earns_more_than_late_detection() {
    let s = series("cat/early.csv", 1000, &[(400, 449)]);
    let raw_at = |row: usize| score_one(&s, spikes(1000, &[row]), STANDARD).raw;
    let rewards: Vec<f64> = (400..=449).map(raw_at).collect();
    assert_close(rewards[0], 1.0, "first row earns a_tp");
    assert!(
        rewards.windows(2).all(|pair| pair[0] > pair[1]),
        "{rewards:?}"
    );
    // Even the last row of the window beats missing it.
    assert!(rewards[49] > 0.0, "{}", rewards[49]);
    // Only the first detection in a window counts: a later one adds nothing.
    let both = score_one(&s, spikes(1000, &[410, 400]), STANDARD);
    assert_close(both.raw, rewards[0], "first detection counts");
    assert_eq!(both.tp, 1);
}

#[test]
fn false_positive_costs_less_right_after_a_window_than_far_from_it() {
    let s = series("cat/fp.csv", 1000, &[(400, 449)]);
    let raw_with = |extra: &[usize]| {
        let mut rows = vec![400];
        rows.extend_from_slice(extra);
        score_one(&s, spikes(1000, &rows), STANDARD)
    };
    let clean = raw_with(&[]);
    let near = raw_with(&[451]);
    let far = raw_with(&[900]);
    let before = raw_with(&[200]);
    assert!(
        clean.raw > near.raw && near.raw > far.raw,
        "{clean:?} {near:?} {far:?}"
    );
    assert_close(
        clean.raw - far.raw,
        STANDARD.a_fp,
        "far from a window costs a_fp",
    );
    assert_close(
        clean.raw - before.raw,
        STANDARD.a_fp,
        "before any window costs a_fp",
    );
    assert_eq!((near.fp, far.fp, clean.fp), (1, 1, 0));
    // The low-FP profile doubles the cost.
    let low_fp = &PROFILES[1];
    let doubled = score_one(&s, spikes(1000, &[400, 900]), low_fp);
    assert_close(1.0 - doubled.raw, 0.22, "reward_low_FP_rate");
}

#[test]
fn probationary_rows_are_ignored() {
    assert_eq!(probationary_period(100), 15);
    assert_eq!(probationary_period(1000), 150);
    assert_eq!(probationary_period(4032), 604);
    assert_eq!(probationary_period(5000), 750);
    assert_eq!(probationary_period(15_902), 750);

    // Detections in rows 0..150 neither cost nor earn, even when a window starts inside them.
    let s = series("cat/probation.csv", 1000, &[(140, 169)]);
    let in_probation: Vec<usize> = (0..150).collect();
    let result = score_one(&s, spikes(1000, &in_probation), STANDARD);
    assert_eq!((result.tp, result.fp, result.fn_), (0, 0, 1));
    assert_eq!(result.raw, result.null);
    // The first scored row of that window earns its weight at its position in the whole window.
    let at_150 = score_one(&s, spikes(1000, &[150]), STANDARD);
    assert_eq!(at_150.tp, 1);
    assert!(at_150.raw > 0.0 && at_150.raw < 1.0);

    // A window wholly inside probation is neither a hit nor a miss (NAB drops its rows).
    let hidden = series("cat/hidden.csv", 1000, &[(10, 20), (600, 609)]);
    let nothing = score_at_threshold(&[hidden], &[vec![0.0; 1000]], STANDARD, 0.5);
    assert_eq!(nothing.null, -1.0);
    assert_eq!(nothing.perfect, 2.0);
    assert_eq!(nothing.fn_, 1);
}

#[test]
fn bad_input_is_an_error_naming_the_series() {
    let corpus = corpus();
    let good: Vec<Vec<f64>> = corpus
        .iter()
        .map(|s| vec![0.0; s.timestamps.len()])
        .collect();

    let mut short = good.clone();
    short[1].pop();
    let err = score_corpus(&corpus, &short, STANDARD)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("realA/two.csv") && err.contains("999 anomaly scores"),
        "{err}"
    );

    let mut nan = good.clone();
    nan[2][500] = f64::NAN;
    let err = score_corpus(&corpus, &nan, STANDARD)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("realB/none.csv") && err.contains("row 500"),
        "{err}"
    );

    let mut big = good.clone();
    big[0][7] = 1.5;
    let err = score_corpus(&corpus, &big, STANDARD)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("realA/one.csv") && err.contains("not in [0, 1]"),
        "{err}"
    );

    let err = score_corpus(&corpus, &good[..2], STANDARD)
        .unwrap_err()
        .to_string();
    assert!(err.contains("2 score vectors for 3 series"), "{err}");

    let mut overlapping = corpus.clone();
    overlapping[0].windows = vec![(300, 349), (340, 400)];
    let err = score_corpus(&overlapping, &good, STANDARD)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("realA/one.csv") && err.contains("window 1"),
        "{err}"
    );

    let no_windows = vec![series("cat/a.csv", 10, &[])];
    assert!(score_corpus(&no_windows, &[vec![0.0; 10]], STANDARD).is_err());
}

/// A random corpus of one to three series with disjoint windows and scores on a coarse grid, so
/// that many rows share a score.
fn arb_corpus() -> impl Strategy<Value = (Vec<LabeledSeries>, Vec<Vec<f64>>)> {
    let one = (20usize..160).prop_flat_map(|rows| {
        (
            Just(rows),
            prop::collection::vec((0..rows, 1usize..25), 0..4),
            prop::collection::vec(0u8..=10, rows),
        )
    });
    prop::collection::vec(one, 1..4).prop_map(|parts| {
        parts
            .into_iter()
            .enumerate()
            .map(|(k, (rows, mut raw, levels))| {
                raw.sort_unstable();
                let mut windows: Vec<(usize, usize)> = Vec::new();
                for (start, width) in raw {
                    let end = (start + width - 1).min(rows - 1);
                    if windows.last().is_none_or(|&(_, prev)| start > prev) {
                        windows.push((start, end));
                    }
                }
                let s = series(&format!("cat/s{k}.csv"), rows, &windows);
                (s, levels.into_iter().map(|l| f64::from(l) / 10.0).collect())
            })
            .unzip()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn sweep_finds_the_brute_force_optimum((corpus, scores) in arb_corpus()) {
        let windows: usize = corpus.iter().map(|s| s.windows.len()).sum();
        for profile in &PROFILES {
            let swept = score_corpus(&corpus, &scores, profile);
            if windows == 0 {
                prop_assert!(swept.is_err());
                continue;
            }
            let swept = swept.unwrap();
            let mut thresholds: Vec<f64> = scores.iter().flatten().copied().collect();
            thresholds.push(NO_DETECTION_THRESHOLD);
            let brute = thresholds
                .iter()
                .map(|&t| score_at_threshold(&corpus, &scores, profile, t).raw)
                .fold(f64::NEG_INFINITY, f64::max);
            prop_assert!((swept.raw - brute).abs() < 1e-9, "{} vs {}", swept.raw, brute);
            let again = score_at_threshold(&corpus, &scores, profile, swept.threshold);
            prop_assert_eq!(&again, &swept);
            prop_assert!(swept.normalized <= 100.0 + 1e-9);
        }
    }
}

#[test]
fn timestamps_parse_and_format_as_utc() {
    assert_eq!(parse_timestamp("2014-02-19 10:50:00"), Some(1_392_807_000));
    assert_eq!(
        parse_timestamp("2014-02-19 10:50:00.000000"),
        Some(1_392_807_000)
    );
    assert_eq!(
        parse_timestamp("2014-02-19T10:50:00.5"),
        Some(1_392_807_000)
    );
    assert_eq!(parse_timestamp("1970-01-01 00:00:00"), Some(0));
    assert_eq!(parse_timestamp("1969-12-31 23:59:59"), Some(-1));
    assert_eq!(parse_timestamp("2000-02-29 23:59:59"), Some(951_868_799));
    for bad in [
        "",
        "2014-2-19 10:50:00",
        "2014-02-30 10:50:00",
        "1900-02-29 00:00:00",
        "2014-02-19 24:00:00",
        "2014-02-19 10:60:00",
        "2014-02-19 10:50:00.",
        "2014-02-19 10:50:00.1234567890",
        "2014-02-19 10:50:00Z",
        "2014/02/19 10:50:00",
    ] {
        assert_eq!(parse_timestamp(bad), None, "{bad:?}");
    }
    for t in [
        0,
        -1,
        951_868_799,
        1_392_807_000,
        1_424_987_573,
        4_102_444_800,
    ] {
        assert_eq!(parse_timestamp(&format_timestamp(t)), Some(t), "{t}");
    }
    assert_eq!(format_timestamp(1_392_807_000), "2014-02-19 10:50:00");
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

#[test]
fn reads_a_corpus_and_writes_nab_result_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let rows: String = (0..10)
        .map(|i| format!("{},{}\n", format_timestamp(1_400_000_000 + 300 * i), i))
        .collect();
    write(
        &root.join("data/realB/b.csv"),
        &format!("timestamp,value\n{rows}"),
    );
    write(
        &root.join("data/realA/a.csv"),
        &format!("timestamp,value\n{rows}"),
    );
    write(&root.join("data/README.md"), "not a series");
    // Window 1 starts between rows 2 and 3 and ends between rows 5 and 6: rows 3..=5.
    let start = format_timestamp(1_400_000_000 + 300 * 2 + 1);
    let end = format_timestamp(1_400_000_000 + 300 * 5 + 299);
    let exact = format_timestamp(1_400_000_000 + 300 * 8);
    write(
        &root.join("labels/combined_windows.json"),
        &format!(
            r#"{{"realA/a.csv": [["{exact}.000000", "{exact}.000000"], ["{start}", "{end}"]],
                "realB/b.csv": []}}"#
        ),
    );

    let corpus = read_corpus(root).unwrap();
    let names: Vec<&str> = corpus.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["realA/a.csv", "realB/b.csv"]);
    assert_eq!(corpus[0].windows, [(3, 5), (8, 8)]);
    assert_eq!(corpus[0].timestamps.len(), 10);
    assert_eq!(corpus[0].values[9], 9.0);
    assert!(corpus[1].windows.is_empty());

    let scores: Vec<f64> = (0..10).map(|i| f64::from(i) / 10.0).collect();
    let out = dir.path().join("results");
    let path = write_results(&out, "zscore", &corpus[0], &scores).unwrap();
    assert_eq!(path, out.join("zscore/realA/zscore_a.csv"));
    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 11);
    assert_eq!(lines[0], "timestamp,value,anomaly_score");
    assert_eq!(lines[1], format!("{},0,0", format_timestamp(1_400_000_000)));
    assert_eq!(
        lines[10],
        format!("{},9,0.9", format_timestamp(1_400_002_700))
    );
    assert!(write_results(&out, "z/score", &corpus[0], &scores).is_err());
    assert!(write_results(&out, "zscore", &corpus[0], &scores[..9]).is_err());
}

#[test]
fn reader_errors_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let labels = root.join("labels/combined_windows.json");
    write(
        &root.join("data/cat/a.csv"),
        "timestamp,value\n2014-01-01 00:00:00,1\n",
    );
    write(&labels, r#"{"cat/a.csv": []}"#);
    assert!(read_corpus(root).is_ok());

    write(
        &root.join("data/cat/a.csv"),
        "timestamp,value\n2014-01-01 00:00:00,1\n2014-01-01 00:05:00,oops\n",
    );
    let err = read_corpus(root).unwrap_err().to_string();
    assert!(
        err.contains("cat/a.csv") && err.contains("line 3") && err.contains("oops"),
        "{err}"
    );

    write(
        &root.join("data/cat/a.csv"),
        "timestamp,value\n2014-01-01 00:05:00,1\n2014-01-01 00:00:00,2\n",
    );
    let err = read_corpus(root).unwrap_err().to_string();
    assert!(
        err.contains("line 3") && err.contains("before the previous"),
        "{err}"
    );

    write(
        &root.join("data/cat/a.csv"),
        "timestamp,value\n2014-01-01 00:00:00,1\n",
    );
    write(
        &labels,
        r#"{"cat/a.csv": [["2015-01-01 00:00:00", "2015-01-02 00:00:00"]]}"#,
    );
    let err = read_corpus(root).unwrap_err().to_string();
    assert!(
        err.contains("combined_windows.json") && err.contains("covers no row"),
        "{err}"
    );

    write(&labels, r#"{"cat/a.csv": [], "cat/missing.csv": []}"#);
    let err = read_corpus(root).unwrap_err().to_string();
    assert!(err.contains("cat/missing.csv"), "{err}");

    write(&labels, r#"{}"#);
    let err = read_corpus(root).unwrap_err().to_string();
    assert!(err.contains("no entry for cat/a.csv"), "{err}");

    write(
        &labels,
        "{\n  \"cat/a.csv\": [[\"2014-01-01 00:00:00\"]]\n}",
    );
    let err = read_corpus(root).unwrap_err().to_string();
    assert!(
        err.contains("combined_windows.json") && err.contains("line 2"),
        "{err}"
    );
}

#[test]
fn repeated_timestamps_are_read_and_a_window_ends_at_the_first_of_them() {
    // NAB's exchange-2 and t4013 series repeat a timestamp; NAB ends a window at the first row
    // holding its end timestamp (`timestamps.index(end)`).
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let t = |i: i64| format_timestamp(1_400_000_000 + 300 * i);
    let rows = [0, 1, 2, 2, 3, 4].map(|i| format!("{},1\n", t(i))).concat();
    write(
        &root.join("data/cat/dup.csv"),
        &format!("timestamp,value\n{rows}"),
    );
    write(
        &root.join("labels/combined_windows.json"),
        &format!(r#"{{"cat/dup.csv": [["{}", "{}"]]}}"#, t(1), t(2)),
    );
    let corpus = read_corpus(root).unwrap();
    assert_eq!(corpus[0].timestamps.len(), 6);
    assert_eq!(corpus[0].windows, [(1, 2)]);
}

#[test]
fn real_corpus_loads_and_null_and_perfect_hold() {
    let root = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/nab"
    ));
    if !root.is_dir() {
        eprintln!("skipping: NAB corpus not found at {}", root.display());
        return;
    }
    let corpus = read_corpus(root).unwrap();
    assert_eq!(corpus.len(), 34);
    let windows: usize = corpus.iter().map(|s| s.windows.len()).sum();
    // The 34 series of the development set carry 67 windows between them.
    assert_eq!(windows, 67);
    for s in &corpus {
        let with_anomalies = !s.name.starts_with("artificialNoAnomaly/");
        assert_eq!(!s.windows.is_empty(), with_anomalies, "{}", s.name);
        // Every window lies after the probationary period in this corpus.
        let probation = probationary_period(s.timestamps.len());
        assert!(s.windows.iter().all(|w| w.0 >= probation), "{}", s.name);
    }

    let silent: Vec<Vec<f64>> = corpus
        .iter()
        .map(|s| vec![0.0; s.timestamps.len()])
        .collect();
    let perfect: Vec<Vec<f64>> = perfect_scores(&corpus);
    for profile in &PROFILES {
        let nothing = score_corpus(&corpus, &silent, profile).unwrap();
        assert_eq!(nothing.normalized, 0.0, "{}", profile.name);
        assert_eq!(nothing.null, -profile.a_fn * windows as f64);
        assert_eq!(nothing.perfect, profile.a_tp * windows as f64);
        let best = score_corpus(&corpus, &perfect, profile).unwrap();
        assert_close(best.normalized, 100.0, profile.name);
        assert_eq!((best.tp, best.fp, best.fn_), (windows, 0, 0));
    }
}
