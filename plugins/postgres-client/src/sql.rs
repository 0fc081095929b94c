//! Quoting names and values into SQL text. Every identifier the plugins put into a
//! statement goes through [`ident`], every value through [`literal`].

/// `name` as a quoted identifier: `"name"`, with inner quotes doubled.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `schema.table` with both parts quoted.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", ident(schema), ident(table))
}

/// `value` as a string literal: `'value'`, with inner quotes doubled. The connection runs
/// with `standard_conforming_strings = on`, so backslashes need no escaping.
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Split `schema.table` (either part may be quoted) into its parts; a bare `table` is in
/// `public`. `None` when the text is not a name of one or two parts.
pub fn split_qualified(name: &str) -> Option<(String, String)> {
    let mut parts = Vec::new();
    let mut chars = name.chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    '"' => break,
                    c => part.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                part.push(c);
                chars.next();
            }
        }
        if part.is_empty() {
            return None;
        }
        parts.push(part);
        match chars.next() {
            None => break,
            Some('.') => continue,
            Some(_) => return None,
        }
    }
    match parts.len() {
        1 => Some(("public".into(), parts.pop()?)),
        2 => {
            let table = parts.pop()?;
            Some((parts.pop()?, table))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals_are_quoted_with_inner_quotes_doubled() {
        assert_eq!(ident(r#"we"ird"#), r#""we""ird""#);
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal(r"back\slash"), r"'back\slash'");
    }

    #[test]
    fn qualified_names_split_into_schema_and_table() {
        assert_eq!(
            split_qualified("orders"),
            Some(("public".into(), "orders".into()))
        );
        assert_eq!(
            split_qualified("sales.orders"),
            Some(("sales".into(), "orders".into()))
        );
        assert_eq!(
            split_qualified(r#""My Schema"."a.b""#),
            Some(("My Schema".into(), "a.b".into()))
        );
        assert_eq!(split_qualified("a.b.c"), None);
        assert_eq!(split_qualified(""), None);
        assert_eq!(split_qualified("a."), None);
    }
}
