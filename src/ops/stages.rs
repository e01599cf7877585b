//! `seqpipe stages`: the catalogue of stage kinds — inputs, outputs, params
//! with their defaults and meaning.

use crate::stage::Registry;

/// Prints the catalogue as text or JSON.
pub fn stages(registry: &Registry, json: bool) -> anyhow::Result<()> {
    if json {
        let kinds: Vec<serde_json::Value> = registry
            .kinds()
            .map(|k| {
                let mut v = serde_json::to_value(k.info()).unwrap_or_default();
                v["defaults"] = k.defaults();
                v
            })
            .collect();
        crate::outln!("{}", serde_json::to_string_pretty(&kinds)?);
        return Ok(());
    }
    for kind in registry.kinds() {
        let info = kind.info();
        let defaults = kind.defaults();
        crate::outln!(
            "{} (version {}, {:?})",
            info.kind,
            info.version,
            info.resource
        );
        crate::outln!("  {}", info.summary);
        if !info.inputs.is_empty() || info.extra_inputs.is_some() {
            crate::outln!("  inputs:");
            for p in &info.inputs {
                let optional = if p.optional { "(optional) " } else { "" };
                crate::outln!("    {:<12} {:<10} {optional}{}", p.name, p.ty, p.doc);
            }
            if let Some(ty) = info.extra_inputs {
                crate::outln!(
                    "    {:<12} {:<10} any number of further inputs, named as you like",
                    "<any>",
                    ty
                );
            }
        }
        crate::outln!("  outputs:");
        for p in &info.outputs {
            crate::outln!("    {:<12} {:<10} {}", p.name, p.ty, p.doc);
        }
        if !info.params.is_empty() {
            crate::outln!("  params (default):");
            for p in &info.params {
                let default = defaults
                    .get(p.name)
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                crate::outln!("    {:<14} = {:<10} {}", p.name, default, p.doc);
            }
        }
        crate::outln!();
    }
    Ok(())
}
