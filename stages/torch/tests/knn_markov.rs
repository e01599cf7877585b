//! Item kNN and order-k Markov: scores computed by hand on tiny data sets.

use seqpipe_torch::models::itemknn::ItemKnn;
use seqpipe_torch::models::markov::Markov;
use seqpipe_torch::models::Scorer;
use tch::{Device, Tensor};

fn users(seqs: &[&[i64]]) -> Vec<(i64, Vec<i64>)> {
    seqs.iter()
        .enumerate()
        .map(|(u, s)| (u as i64, s.to_vec()))
        .collect()
}

fn assert_close(got: f32, want: f64, what: &str) {
    assert!(
        (got as f64 - want).abs() < 1e-5,
        "{what}: got {got}, want {want}"
    );
}

/// The index of the best-scored item.
fn top(row: &[f32]) -> usize {
    (1..row.len())
        .max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a)))
        .unwrap()
}

// Item kNN on four users over five items (each sequence read as a set):
//
//   u1 = [1, 2, 3], u2 = [1, 2], u3 = [2, 3, 4], u4 = [4, 5, 4]
//
// Users per item: U1 = {u1, u2}, U2 = {u1, u2, u3}, U3 = {u1, u3},
// U4 = {u3, u4}, U5 = {u4}; |U| = 2, 3, 2, 2, 1.
// Cosine sim(i, j) = |Ui ∩ Uj| / (sqrt|Ui| sqrt|Uj|):
//   sim(1,2) = 2 / (√2 √3) = 0.816497    sim(1,3) = 1 / (√2 √2) = 0.5
//   sim(2,3) = 2 / (√3 √2) = 0.816497    sim(2,4) = 1 / (√3 √2) = 0.408248
//   sim(3,4) = 1 / (√2 √2) = 0.5         sim(4,5) = 1 / (√2 √1) = 0.707107
//   every other pair 0.
// Popularity (repeats count): 2, 3, 2, 3, 1; back-off = count / (3 + 1)
//   = 0.5, 0.75, 0.5, 0.75, 0.25.
const KNN_DATA: [&[i64]; 4] = [&[1, 2, 3], &[1, 2], &[2, 3, 4], &[4, 5, 4]];
const S12: f64 = 0.816_496_580_927_726; // 2 / √6
const S24: f64 = 0.408_248_290_463_863; // 1 / √6
const S45: f64 = std::f64::consts::FRAC_1_SQRT_2;

#[test]
fn itemknn_scores_are_cosine_sums() {
    let m = ItemKnn::fit(&users(&KNN_DATA), 5, 100, 0.0);
    let s = m.score(&[vec![3, 4], vec![1], vec![]]).unwrap();
    // After [3, 4]: item 1 ← 3 (0.5); 2 ← 3, 4 (0.816497 + 0.408248);
    // 3 ← 4 (0.5); 4 ← 3 (0.5); 5 ← 4 (0.707107).
    let r = &s[0];
    assert_eq!(r[0], f32::NEG_INFINITY);
    assert_close(r[1], 0.5, "[3,4] → 1");
    assert_close(r[2], S12 + S24, "[3,4] → 2");
    assert_close(r[3], 0.5, "[3,4] → 3");
    assert_close(r[4], 0.5, "[3,4] → 4");
    assert_close(r[5], S45, "[3,4] → 5");
    // Exact ties (0.5) go to the more popular item: 4 (3 uses) before 1
    // and 3 (2 each).
    assert!(r[4] > r[1] && r[4] > r[3], "{r:?}");
    // After [1]: only 2 and 3 are neighbours of 1; the rest rank below, by
    // popularity: back-off − 1.
    let r = &s[1];
    assert_close(r[2], S12, "[1] → 2");
    assert_close(r[3], 0.5, "[1] → 3");
    assert_close(r[1], 0.5 - 1.0, "[1] → 1");
    assert_close(r[4], 0.75 - 1.0, "[1] → 4");
    assert_close(r[5], 0.25 - 1.0, "[1] → 5");
    assert!(r[3] > 0.0 && r[4] < 0.0);
    // Empty history: popularity alone.
    let r = &s[2];
    for (j, b) in [(1, 0.5), (2, 0.75), (3, 0.5), (4, 0.75), (5, 0.25)] {
        assert_close(r[j], b - 1.0, "[] → {j}");
    }
    assert_eq!(top(r), 2);
}

#[test]
fn itemknn_keeps_the_top_k_neighbours_of_the_candidate() {
    // knn_k = 1: N(1) = {2}; N(2) = {1} (1 and 3 tie at 0.816497: smaller
    // id); N(3) = {2}; N(4) = {5}; N(5) = {4}.
    let m = ItemKnn::fit(&users(&KNN_DATA), 5, 1, 0.0);
    let n: Vec<Vec<i64>> = (1..=5)
        .map(|j| m.neighbours(j).iter().map(|p| p.0).collect())
        .collect();
    assert_eq!(n, [vec![2], vec![1], vec![2], vec![5], vec![4]]);
    assert_close(m.neighbours(4)[0].1, S45, "sim(4, 5)");
    let s = m.score(&[vec![3], vec![1], vec![2]]).unwrap();
    // 3 is nobody's neighbour now: popularity only (with k = 100 it scored
    // 1, 2 and 4).
    for (j, b) in [(1, 0.5), (2, 0.75), (3, 0.5), (4, 0.75), (5, 0.25)] {
        assert_close(s[0][j], b - 1.0, "[3] → {j}");
    }
    // 1 is in N(2) only: 3 loses the evidence it had with k = 100.
    assert_close(s[1][2], S12, "[1] → 2");
    assert_close(s[1][3], 0.5 - 1.0, "[1] → 3");
    // 2 is in N(1) and N(3).
    assert_close(s[2][1], S12, "[2] → 1");
    assert_close(s[2][3], S12, "[2] → 3");
    assert!(s[2][5] < 0.0);
}

#[test]
fn itemknn_shrink_damps_and_reloads() {
    // shrink 1: sim(1,2) = 2 / (√6 + 1) = 0.579796.
    let m = ItemKnn::fit(&users(&KNN_DATA), 5, 100, 1.0);
    let histories = vec![vec![1], vec![3, 4], vec![], vec![5, 5, 2]];
    let s = m.score(&histories).unwrap();
    assert_close(s[0][2], 2.0 / (6f64.sqrt() + 1.0), "[1] → 2");
    assert_close(s[0][3], 1.0 / 3.0, "[1] → 3");
    let tmp = tempfile::tempdir().unwrap();
    m.save(tmp.path()).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(
        config,
        serde_json::json!({ "model": "itemknn", "num_items": 5, "knn_k": 100, "shrink": 1.0 })
    );
    let loaded = seqpipe_torch::models::load(tmp.path(), Device::Cpu).unwrap();
    assert_eq!(loaded.score(&histories).unwrap(), s);
}

// Markov: train = [1, 2, 3], [4, 2, 5], [4, 2, 5] (a→b→c once, d→b→e twice).
// First order: 1→2: 1, 2→3: 1, 2→5: 2, 4→2: 2. Second order: (1,2)→3: 1,
// (4,2)→5: 2. Popularity 1, 3, 1, 2, 2; back-off = count / 4
// = 0.25, 0.75, 0.25, 0.5, 0.5.
const MARKOV_DATA: [&[i64]; 3] = [&[1, 2, 3], &[4, 2, 5], &[4, 2, 5]];

#[test]
fn markov_order_two_tells_contexts_apart() {
    let train = users(&MARKOV_DATA);
    let first = Markov::fit(&train, 5);
    let second = Markov::fit_order(&train, 5, 2);
    let histories = vec![vec![1, 2], vec![4, 2], vec![3, 2], vec![2], vec![]];
    let s1 = first.score(&histories).unwrap();
    let s2 = second.score(&histories).unwrap();
    // First order after …2: count + back-off; 3: 1.25, 5: 2.5, whatever
    // came before the 2.
    let v1 = [0.25, 0.75, 1.25, 0.5, 2.5];
    for j in 1..=5 {
        assert_close(s1[0][j], v1[j - 1], "order 1, [1,2]");
    }
    assert_eq!(s1[0], s1[1]);
    assert_eq!(top(&s1[0]), 5);
    // Second order: the first-order scores scaled by 1 / (2 + 1) (2 = the
    // largest first-order count after 2), plus the second-order counts.
    // After [1, 2]: 3 gets 1 + 1.25/3; after [4, 2]: 5 gets 2 + 2.5/3.
    let after_12 = [
        0.25 / 3.0,
        0.75 / 3.0,
        1.0 + 1.25 / 3.0,
        0.5 / 3.0,
        2.5 / 3.0,
    ];
    let after_42 = [
        0.25 / 3.0,
        0.75 / 3.0,
        1.25 / 3.0,
        0.5 / 3.0,
        2.0 + 2.5 / 3.0,
    ];
    for j in 1..=5 {
        assert_close(s2[0][j], after_12[j - 1], "order 2, [1,2]");
        assert_close(s2[1][j], after_42[j - 1], "order 2, [4,2]");
    }
    assert_eq!(top(&s2[0]), 3, "a→b must be followed by c");
    assert_eq!(top(&s2[1]), 5, "d→b must be followed by e");
    // An unseen pair, or a history of one item, backs off to first order
    // (same ranking, scaled by 1/3); an empty one to popularity.
    for h in [2, 3] {
        for j in 1..=5 {
            assert_close(s2[h][j], v1[j - 1] / 3.0, "order 2 back-off");
        }
    }
    for (j, b) in [0.25, 0.75, 0.25, 0.5, 0.5].into_iter().enumerate() {
        assert_close(s2[4][j + 1], b, "order 2, []");
        assert_eq!(s1[4][j + 1], s2[4][j + 1]);
    }
}

#[test]
fn markov_lower_orders_only_break_ties() {
    // (1,2)→3 once; 2→5 many times (from other contexts). Order 3 on
    // [9, 1, 2]: no third-order context, so the second order decides: 3
    // (one count) must beat 5 (many first-order counts, no second-order one).
    let mut seqs: Vec<&[i64]> = vec![&[1, 2, 3], &[6, 1, 2, 4]];
    seqs.extend([&[7, 2, 5][..]; 6]);
    let m = Markov::fit_order(&users(&seqs), 9, 3);
    let s = &m.score(&[vec![9, 1, 2]]).unwrap()[0];
    // Second order after (1, 2): 3 and 4 once each; first order after 2:
    // 3 once, 4 once, 5 six times. So 3 and 4 lead and 5 comes next, above
    // 2 and 7, the most popular items. 3 and 4 are equal at every level
    // (popularity included: one use each), so they tie exactly.
    assert!(s[3] > s[5] && s[4] > s[5], "{s:?}");
    assert_eq!(s[3], s[4]);
    assert!(s[5] > s[2] && s[5] > s[7], "{s:?}");
    // Every score is below the number of its top-level evidence + 1.
    assert!(s[3] < 1.0 && s[5] < 1.0, "{s:?}");
}

#[test]
fn markov_first_order_file_is_unchanged() {
    // The files the first-order chain wrote before `order` existed: cached
    // keys and hashes of existing pipelines depend on these bytes.
    let m = Markov::fit(&users(&MARKOV_DATA), 5);
    let tmp = tempfile::tempdir().unwrap();
    m.save(tmp.path()).unwrap();
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("config.json")).unwrap(),
        "{\n  \"model\": \"markov\",\n  \"num_items\": 5,\n  \"order\": 1\n}"
    );
    let want = tmp.path().join("want.safetensors");
    let tensors = [
        ("prev", Tensor::from_slice(&[1i64, 2, 2, 4])),
        ("next", Tensor::from_slice(&[2i64, 3, 5, 2])),
        ("count", Tensor::from_slice(&[1f32, 1.0, 2.0, 2.0])),
        (
            "backoff",
            Tensor::from_slice(&[0f32, 0.25, 0.75, 0.25, 0.5, 0.5]),
        ),
    ];
    let named: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    Tensor::write_safetensors(&named, &want).unwrap();
    assert_eq!(
        std::fs::read(tmp.path().join("model.safetensors")).unwrap(),
        std::fs::read(&want).unwrap()
    );
}

#[test]
fn markov_order_k_reloads() {
    let m = Markov::fit_order(&users(&MARKOV_DATA), 5, 3);
    let tmp = tempfile::tempdir().unwrap();
    m.save(tmp.path()).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(config["order"], 3);
    let histories = vec![vec![1, 2], vec![4, 2], vec![4, 2, 5], vec![1], vec![]];
    let loaded = seqpipe_torch::models::load(tmp.path(), Device::Cpu).unwrap();
    assert_eq!(
        loaded.score(&histories).unwrap(),
        m.score(&histories).unwrap()
    );
}
