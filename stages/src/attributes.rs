//! Event attributes of held-out examples — what the target event was (its
//! `event_type`, its `domain`, …) and what the event before it was — so
//! that `evaluate` can break its metrics down by them.
//!
//! `sequences` with `attributes = ["event_type", "domain"]` writes, beside
//! `valid.parquet` and `test.parquet`, `valid_attributes.parquet` and
//! `test_attributes.parquet`: one row per example, in the same order, with
//! Utf8 columns `target_<name>` and `previous_<name>` (a missing value
//! reads `(missing)`). Files of pipelines without `attributes` are
//! unchanged.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use arrow::array::{Array, ArrayRef, StringArray};

use crate::splits::EventRows;
use crate::table;

/// What a missing attribute value reads as.
pub const MISSING: &str = "(missing)";

/// One attribute column of the event log, dictionary-encoded: a code per
/// row (memory stays 4 bytes a row whatever the strings).
pub struct Column {
    pub name: String,
    codes: Vec<u32>,
    values: Vec<String>,
}

impl Column {
    fn value(&self, row: usize) -> &str {
        &self.values[self.codes[row] as usize]
    }
}

/// Reads columns `names` of every Parquet file in `dir`, in the order
/// `sequences` reads its events (files sorted by name), as strings.
/// `rows` is how many events were read, to catch a mismatch.
pub fn read(dir: &Path, names: &[String], rows: usize) -> anyhow::Result<Vec<Column>> {
    let files = table::open_table(dir)?.files;
    let mut columns: Vec<(Column, HashMap<String, u32>)> = names
        .iter()
        .map(|n| {
            let column = Column {
                name: n.clone(),
                codes: Vec::with_capacity(rows),
                values: vec![],
            };
            (column, HashMap::new())
        })
        .collect();
    for file in &files {
        for batch in table::batches(file)? {
            let batch = batch?;
            for (column, dictionary) in &mut columns {
                let strings = table::utf8_column(&batch, &column.name, file, "attribute column")?;
                for i in 0..strings.len() {
                    let value = if strings.is_null(i) {
                        MISSING
                    } else {
                        strings.value(i)
                    };
                    let next = dictionary.len() as u32;
                    let code = *dictionary.entry(value.to_string()).or_insert(next);
                    if code == next {
                        column.values.push(value.to_string());
                    }
                    column.codes.push(code);
                }
            }
        }
    }
    for (column, _) in &columns {
        anyhow::ensure!(
            column.codes.len() == rows,
            "{}: attribute `{}` has {} values for {rows} events",
            dir.display(),
            column.name,
            column.codes.len()
        );
    }
    Ok(columns.into_iter().map(|(c, _)| c).collect())
}

/// Writes the attributes of the examples whose events are `rows`.
pub fn write(path: &Path, columns: &[Column], rows: &[EventRows]) -> anyhow::Result<()> {
    let mut out: Vec<(String, ArrayRef)> = vec![];
    for column in columns {
        let target: Vec<&str> = rows.iter().map(|&(t, _)| column.value(t)).collect();
        let previous: Vec<&str> = rows.iter().map(|&(_, p)| column.value(p)).collect();
        out.push((
            format!("target_{}", column.name),
            Arc::new(StringArray::from(target)),
        ));
        out.push((
            format!("previous_{}", column.name),
            Arc::new(StringArray::from(previous)),
        ));
    }
    let batch = table::batch(out.iter().map(|(n, a)| (n.as_str(), a.clone())).collect())?;
    table::write(path, &batch)
}

/// The attribute columns of split `split` ("valid" or "test") of a
/// sequences artifact: (column name, one value per example); empty when
/// the artifact has none.
pub fn read_split(data_dir: &Path, split: &str) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    let path = data_dir.join(format!("{split}_attributes.parquet"));
    if !path.exists() {
        return Ok(vec![]);
    }
    let batch = table::read(&path)?;
    let schema = batch.schema();
    let mut out = vec![];
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let strings = column
            .as_any()
            .downcast_ref::<StringArray>()
            .with_context(|| format!("{}: `{}` is not text", path.display(), field.name()))?;
        let values = (0..strings.len())
            .map(|i| strings.value(i).to_string())
            .collect();
        out.push((field.name().clone(), values));
    }
    Ok(out)
}

/// The breakdowns these attributes give, as (name, label per example): by
/// each target attribute (`target_domain`), and for each attribute with
/// its previous value, the transition (`domain_transition`: "retail →
/// marketplace") and whether it changed (`domain_change`: "same" or
/// "changed" — a cross-domain next item is "changed").
pub fn breakdowns(columns: &[(String, Vec<String>)]) -> Vec<(String, Vec<String>)> {
    let find = |name: &str| columns.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let mut out = vec![];
    for (name, values) in columns {
        let Some(attribute) = name.strip_prefix("target_") else {
            continue;
        };
        out.push((name.clone(), values.clone()));
        if let Some(previous) = find(&format!("previous_{attribute}")) {
            let pairs = previous.iter().zip(values);
            out.push((
                format!("{attribute}_transition"),
                pairs.clone().map(|(p, t)| format!("{p} → {t}")).collect(),
            ));
            out.push((
                format!("{attribute}_change"),
                pairs
                    .map(|(p, t)| if p == t { "same" } else { "changed" }.to_string())
                    .collect(),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breakdowns_name_targets_transitions_and_changes() {
        let columns = vec![
            ("target_domain".to_string(), vec!["a".into(), "b".into()]),
            ("previous_domain".to_string(), vec!["a".into(), "a".into()]),
        ];
        let b = breakdowns(&columns);
        let names: Vec<&str> = b.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["target_domain", "domain_transition", "domain_change"]
        );
        assert_eq!(b[1].1, ["a → a", "a → b"]);
        assert_eq!(b[2].1, ["same", "changed"]);
    }
}
