//! `shell = true`: how values reach a script run by `sh -c` without ever
//! being read as shell text.
//!
//! A value pasted into the script, however quoted, is re-parsed by the
//! shell: inside the user's own double quotes a param `$(touch x)` would
//! run. So no value is pasted. Each placeholder becomes a reference to an
//! environment variable `SEQPIPE_ARG_<n>` that holds its value, and the
//! shell only ever expands it — the result of an expansion is never parsed
//! again. Where the placeholder stands decides the reference:
//!
//! | where                         | becomes                 |
//! |-------------------------------|-------------------------|
//! | outside quotes                | `"${SEQPIPE_ARG_1}"`    |
//! | inside `"…"` (or a here-doc)  | `${SEQPIPE_ARG_1}`      |
//! | inside `$(( … ))`             | `${SEQPIPE_ARG_1}`, and the value must be an integer |
//! | inside `'…'`, `$'…'` or a here-doc with a quoted delimiter | refused at plan time |
//! | right after a `\`             | refused at plan time    |
//!
//! Inside single quotes the shell expands nothing, so the value could not
//! arrive there at all; the error says to drop the quotes (a placeholder is
//! one word already). An arithmetic expansion evaluates what a variable
//! holds (and bash, when it is `sh`, would run a `$(…)` inside an array
//! subscript there), so a value in one must be a plain integer, checked
//! when the stage runs. The same placeholder twice shares one variable.
//!
//! The scan below follows quotes, `\` escapes, `$( … )`, backticks,
//! comments and here-documents — enough for the scripts people write in
//! `cmd`. Where it could misjudge an exotic construct, the cost is word
//! splitting of a value, never its execution: every reference is to a
//! variable.

use super::template::{Names, Piece, Template, Values};

/// The prefix of the variables that carry placeholder values.
pub const VAR_PREFIX: &str = "SEQPIPE_ARG_";

/// A shell script with its placeholders resolved to variable references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellScript {
    template: Template,
    /// Per piece of the template: where a placeholder stands.
    contexts: Vec<Context>,
}

/// Where a placeholder stands in the script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    /// Outside quotes: the reference needs its own double quotes.
    Bare,
    /// Inside double quotes or an unquoted here-document.
    Quoted,
    /// Inside `$(( … ))`: the value must be an integer.
    Arithmetic,
}

impl ShellScript {
    /// Parses the script; `Err` names a placeholder the shell could not
    /// expand where it stands, or a bad placeholder.
    pub fn parse(text: &str, names: &Names<'_>) -> Result<ShellScript, String> {
        let template = Template::parse(text, names)?;
        let contexts = contexts(&template.0)?;
        Ok(ShellScript { template, contexts })
    }

    /// The template as written (for messages).
    pub fn template(&self) -> &Template {
        &self.template
    }

    /// The script for `sh -c` and the variables it references, with their
    /// values; `Err` when a value in an arithmetic expansion is not an
    /// integer.
    pub fn render(&self, values: &Values<'_>) -> Result<(String, Vec<(String, String)>), String> {
        let mut script = String::new();
        let mut vars: Vec<(&Piece, String, String)> = Vec::new();
        for (piece, context) in self.template.0.iter().zip(&self.contexts) {
            if let Piece::Text(text) = piece {
                script.push_str(text);
                continue;
            }
            let name = match vars.iter().find(|(p, _, _)| *p == piece) {
                Some((_, name, _)) => name.clone(),
                None => {
                    let name = format!("{VAR_PREFIX}{}", vars.len() + 1);
                    vars.push((piece, name.clone(), values.text(piece)));
                    name
                }
            };
            match context {
                Context::Bare => script.push_str(&format!("\"${{{name}}}\"")),
                Context::Quoted => script.push_str(&format!("${{{name}}}")),
                Context::Arithmetic => {
                    let value = values.text(piece);
                    let digits = value.strip_prefix(['-', '+']).unwrap_or(&value);
                    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
                        return Err(format!(
                            "`{}` stands in an arithmetic expansion `$(( … ))` in `cmd`, \
                             where the shell evaluates it, and its value {value:?} is not \
                             an integer",
                            show(piece)
                        ));
                    }
                    script.push_str(&format!("${{{name}}}"));
                }
            }
        }
        let vars = vars.into_iter().map(|(_, n, v)| (n, v)).collect();
        Ok((script, vars))
    }
}

/// One character of the script, or a placeholder (by piece index).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok {
    Char(char),
    Hole(usize),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Frame {
    /// Unquoted: the top level, `$( … )` (with its paren depth), backticks.
    Bare,
    Subst(u32),
    Backtick,
    /// `$(( … ))`, with its paren depth.
    Arith(u32),
    Double,
    Single,
}

struct HereDoc {
    delimiter: String,
    quoted: bool,
    strip_tabs: bool,
}

/// For every piece: where a placeholder there stands.
fn contexts(pieces: &[Piece]) -> Result<Vec<Context>, String> {
    let mut toks = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        match piece {
            Piece::Text(text) => toks.extend(text.chars().map(Tok::Char)),
            _ => toks.push(Tok::Hole(i)),
        }
    }
    let mut quoted = vec![Context::Bare; pieces.len()];
    let refuse = |i: usize, why: &str, help: &str| -> String {
        format!("`{}` stands {why}; {help}", show(&pieces[i]))
    };
    let single_help = "the shell expands nothing there, so its value could not arrive: drop \
                       those quotes (a placeholder is passed as one word anyway) or use \
                       double quotes";
    let mut stack = vec![Frame::Bare];
    let mut pending: Vec<HereDoc> = Vec::new();
    let mut word_start = true;
    let mut k = 0;
    while k < toks.len() {
        let frame = *stack.last().expect("the top frame stays");
        let tok = toks[k];
        k += 1;
        let c = match tok {
            Tok::Hole(i) => {
                match frame {
                    Frame::Single => {
                        return Err(refuse(i, "inside single quotes in `cmd`", single_help))
                    }
                    Frame::Double => quoted[i] = Context::Quoted,
                    Frame::Arith(_) => quoted[i] = Context::Arithmetic,
                    _ => {}
                }
                word_start = false;
                continue;
            }
            Tok::Char(c) => c,
        };
        match frame {
            Frame::Single => {
                if c == '\'' {
                    stack.pop();
                }
                continue;
            }
            Frame::Double => {
                match c {
                    '"' => {
                        stack.pop();
                    }
                    '\\' => escape(&toks, &mut k, pieces)?,
                    '`' => stack.push(Frame::Backtick),
                    '$' if toks.get(k) == Some(&Tok::Char('(')) => {
                        stack.push(open_paren(&toks, &mut k));
                    }
                    _ => {}
                }
                continue;
            }
            Frame::Bare | Frame::Subst(_) | Frame::Backtick | Frame::Arith(_) => {}
        }
        let at_word_start = word_start;
        word_start = c.is_whitespace() || ";&|()<>".contains(c);
        match c {
            '\\' => escape(&toks, &mut k, pieces)?,
            '\'' => stack.push(Frame::Single),
            '"' => stack.push(Frame::Double),
            '$' if toks.get(k) == Some(&Tok::Char('\'')) => {
                k += 1;
                stack.push(Frame::Single);
            }
            '$' if toks.get(k) == Some(&Tok::Char('(')) => {
                stack.push(open_paren(&toks, &mut k));
                word_start = true;
            }
            '`' if frame == Frame::Backtick => {
                stack.pop();
            }
            '`' => stack.push(Frame::Backtick),
            '(' => match frame {
                Frame::Subst(depth) => {
                    *stack.last_mut().expect("a frame") = Frame::Subst(depth + 1)
                }
                Frame::Arith(depth) => {
                    *stack.last_mut().expect("a frame") = Frame::Arith(depth + 1)
                }
                _ => {}
            },
            ')' => match frame {
                Frame::Subst(0) => {
                    stack.pop();
                }
                Frame::Subst(depth) => {
                    *stack.last_mut().expect("a frame") = Frame::Subst(depth - 1)
                }
                Frame::Arith(0) => {
                    // The closing `))`.
                    if toks.get(k) == Some(&Tok::Char(')')) {
                        k += 1;
                    }
                    stack.pop();
                }
                Frame::Arith(depth) => {
                    *stack.last_mut().expect("a frame") = Frame::Arith(depth - 1)
                }
                _ => {}
            },
            '#' if at_word_start => {
                // A comment, to the end of the line.
                while k < toks.len() && toks[k] != Tok::Char('\n') {
                    k += 1;
                }
            }
            '<' if toks.get(k) == Some(&Tok::Char('<')) => {
                k += 1;
                pending.push(here_doc(&toks, &mut k));
            }
            '\n' => {
                for doc in std::mem::take(&mut pending) {
                    here_doc_body(&toks, &mut k, &doc, &mut quoted, pieces)?;
                }
            }
            _ => {}
        }
    }
    Ok(quoted)
}

/// After `$` and before `(`: a command substitution `$( … )` or an
/// arithmetic expansion `$(( … ))`, which `k` is moved past the opening of.
fn open_paren(toks: &[Tok], k: &mut usize) -> Frame {
    *k += 1;
    if toks.get(*k) == Some(&Tok::Char('(')) {
        *k += 1;
        Frame::Arith(0)
    } else {
        Frame::Subst(0)
    }
}

/// After a `\`: the next character is literal, and a placeholder there
/// would lose its opening quote.
fn escape(toks: &[Tok], k: &mut usize, pieces: &[Piece]) -> Result<(), String> {
    match toks.get(*k) {
        Some(Tok::Hole(i)) => Err(format!(
            "`{}` stands right after a backslash in `cmd`, which would escape the quote \
             seqpipe puts around its value; remove the backslash",
            show(&pieces[*i])
        )),
        Some(Tok::Char(_)) => {
            *k += 1;
            Ok(())
        }
        None => Ok(()),
    }
}

/// Reads a here-doc operator's `-` and delimiter word (after `<<`).
fn here_doc(toks: &[Tok], k: &mut usize) -> HereDoc {
    let strip_tabs = toks.get(*k) == Some(&Tok::Char('-'));
    if strip_tabs {
        *k += 1;
    }
    while matches!(toks.get(*k), Some(Tok::Char(' ' | '\t'))) {
        *k += 1;
    }
    let mut delimiter = String::new();
    let mut quoted = false;
    let mut in_quote: Option<char> = None;
    while let Some(tok) = toks.get(*k) {
        let Tok::Char(c) = *tok else {
            // A placeholder in the delimiter: the body is taken as quoted.
            quoted = true;
            *k += 1;
            continue;
        };
        match (in_quote, c) {
            (Some(q), c) if c == q => in_quote = None,
            (Some(_), c) => delimiter.push(c),
            (None, '\'' | '"') => {
                quoted = true;
                in_quote = Some(c);
            }
            (None, '\\') => quoted = true,
            (None, c) if c.is_whitespace() || ";&|<>()".contains(c) => break,
            (None, c) => delimiter.push(c),
        }
        *k += 1;
    }
    HereDoc {
        delimiter,
        quoted,
        strip_tabs,
    }
}

/// Skips a here-doc's body, lines up to its delimiter; placeholders there
/// expand as in double quotes, or are refused if the delimiter was quoted.
fn here_doc_body(
    toks: &[Tok],
    k: &mut usize,
    doc: &HereDoc,
    quoted: &mut [Context],
    pieces: &[Piece],
) -> Result<(), String> {
    while *k < toks.len() {
        let end = toks[*k..]
            .iter()
            .position(|t| *t == Tok::Char('\n'))
            .map_or(toks.len(), |p| *k + p);
        let line = &toks[*k..end];
        let text: Option<String> = line
            .iter()
            .map(|t| match t {
                Tok::Char(c) => Some(*c),
                Tok::Hole(_) => None,
            })
            .collect();
        let is_end = text.is_some_and(|t| {
            let t = if doc.strip_tabs {
                t.trim_start_matches('\t')
            } else {
                &t
            };
            t == doc.delimiter
        });
        *k = (end + 1).min(toks.len());
        if is_end {
            return Ok(());
        }
        let mut j = 0;
        while j < line.len() {
            match line[j] {
                Tok::Hole(i) if doc.quoted => {
                    return Err(format!(
                        "`{}` stands in a here-document with a quoted delimiter in `cmd`, \
                         where the shell expands nothing; unquote the delimiter",
                        show(&pieces[i])
                    ))
                }
                Tok::Hole(i) => quoted[i] = Context::Quoted,
                Tok::Char('\\') if !doc.quoted => {
                    if let Some(Tok::Hole(i)) = line.get(j + 1) {
                        return Err(format!(
                            "`{}` stands right after a backslash in `cmd`; remove the backslash",
                            show(&pieces[*i])
                        ));
                    }
                    j += 1;
                }
                Tok::Char(_) => {}
            }
            j += 1;
        }
    }
    Ok(())
}

/// A placeholder as written: `{params.lr}`.
fn show(piece: &Piece) -> String {
    match piece {
        Piece::Text(t) => t.clone(),
        Piece::Param(n) => format!("{{params.{n}}}"),
        Piece::Input(n) => format!("{{inputs.{n}}}"),
        Piece::Output(n) => format!("{{outputs.{n}}}"),
        Piece::CheckpointDir => "{checkpoint_dir}".into(),
        Piece::Seed => "{seed}".into(),
        Piece::Device => "{device}".into(),
        Piece::Stage => "{stage}".into(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;

    fn names() -> Names<'static> {
        Names {
            params: vec!["a", "b"],
            inputs: vec!["data"],
            outputs: vec!["out"],
        }
    }

    fn render(script: &str) -> Result<(String, Vec<(String, String)>), String> {
        let parsed = ShellScript::parse(script, &names())?;
        let params = serde_json::json!({"a": "$(touch x)", "b": 2});
        let inputs = BTreeMap::from([("data".to_string(), "/in dir".into())]);
        let outputs = BTreeMap::from([("out".to_string(), "/out".into())]);
        let values = Values {
            params: &params,
            inputs: &inputs,
            outputs: &outputs,
            checkpoint_dir: Path::new("/ck"),
            seed: 7,
            device: "cpu",
            stage: "s",
        };
        parsed.render(&values)
    }

    fn script(text: &str) -> String {
        render(text).unwrap().0
    }

    #[test]
    fn placeholders_become_variable_references() {
        let (text, vars) =
            render("cat {inputs.data} > {outputs.out}/x; echo {params.a} {inputs.data}").unwrap();
        assert_eq!(
            text,
            r#"cat "${SEQPIPE_ARG_1}" > "${SEQPIPE_ARG_2}"/x; echo "${SEQPIPE_ARG_3}" "${SEQPIPE_ARG_1}""#
        );
        assert_eq!(
            vars,
            [
                ("SEQPIPE_ARG_1".to_string(), "/in dir".to_string()),
                ("SEQPIPE_ARG_2".to_string(), "/out".to_string()),
                ("SEQPIPE_ARG_3".to_string(), "$(touch x)".to_string()),
            ]
        );
    }

    #[test]
    fn inside_double_quotes_the_reference_is_bare() {
        assert_eq!(
            script(r#"echo "a {params.a} \" {params.b}" {seed}"#),
            r#"echo "a ${SEQPIPE_ARG_1} \" ${SEQPIPE_ARG_2}" "${SEQPIPE_ARG_3}""#
        );
        // A command substitution inside double quotes is unquoted again.
        assert_eq!(
            script(r#"echo "$(cat {inputs.data})" "`ls {params.b}`""#),
            r#"echo "$(cat "${SEQPIPE_ARG_1}")" "`ls "${SEQPIPE_ARG_2}"`""#
        );
    }

    #[test]
    fn single_quotes_are_followed_and_refused_around_a_placeholder() {
        // Quotes that close before the placeholder do not count.
        assert_eq!(
            script(r#"awk '{ print $1 }' {inputs.data}"#),
            r#"awk '{ print $1 }' "${SEQPIPE_ARG_1}""#
        );
        assert_eq!(
            script(r#"echo "it's" {params.b}"#),
            r#"echo "it's" "${SEQPIPE_ARG_1}""#
        );
        for bad in [
            "echo '{params.a}'",
            "echo 'x {params.a} y'",
            "echo \"a\"'{params.a}'",
            "echo $'{params.a}'",
        ] {
            let e = render(bad).unwrap_err();
            assert!(
                e.contains("`{params.a}` stands inside single quotes"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn arithmetic_takes_integers_only() {
        assert_eq!(
            script("echo $(( -({params.b} - 2) * ({params.b} - 2) )) \"$(({seed}+1))\" {seed}"),
            r#"echo $(( -(${SEQPIPE_ARG_1} - 2) * (${SEQPIPE_ARG_1} - 2) )) "$((${SEQPIPE_ARG_2}+1))" "${SEQPIPE_ARG_2}""#
        );
        // A subshell inside a command substitution is not arithmetic.
        assert_eq!(
            script("x=$( (echo {seed}) )"),
            r#"x=$( (echo "${SEQPIPE_ARG_1}") )"#
        );
        let e = render("echo $(( {params.a} + 1 ))").unwrap_err();
        assert!(e.contains("is not an integer"), "{e}");
    }

    #[test]
    fn escapes_comments_and_here_documents() {
        assert_eq!(
            script(r"echo \' {params.b}"),
            r#"echo \' "${SEQPIPE_ARG_1}""#
        );
        let e = render(r"echo \{params.b}").unwrap_err();
        assert!(e.contains("right after a backslash"), "{e}");
        // An apostrophe in a comment opens no quote.
        assert_eq!(
            script("echo {params.b} # it's\necho {seed}"),
            "echo \"${SEQPIPE_ARG_1}\" # it's\necho \"${SEQPIPE_ARG_2}\""
        );
        // `x#y` is a word, not a comment.
        assert_eq!(
            script("echo x#'y' {seed}"),
            "echo x#'y' \"${SEQPIPE_ARG_1}\""
        );
        assert_eq!(
            script("cat <<EOF > {outputs.out}\nv={params.a} it's\nEOF\necho {seed}"),
            "cat <<EOF > \"${SEQPIPE_ARG_1}\"\nv=${SEQPIPE_ARG_2} it's\nEOF\necho \"${SEQPIPE_ARG_3}\""
        );
        let e = render("cat <<'EOF'\n{params.a}\nEOF").unwrap_err();
        assert!(e.contains("quoted delimiter"), "{e}");
        assert_eq!(
            script("cat <<-'EOF'\n\tit's\n\tEOF\necho {seed}"),
            "cat <<-'EOF'\n\tit's\n\tEOF\necho \"${SEQPIPE_ARG_1}\""
        );
    }
}
