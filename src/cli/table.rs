//! Tables for people: the API's JSON resources as rows under a header, in aligned columns, and
//! one resource as label/value lines.

use serde_json::Value;

/// A column: its header and the resource's field it shows.
pub struct Column {
    pub header: &'static str,
    pub field: &'static str,
}

/// `Column` list literals: `columns![("ID", "id"), ("NAME", "name")]`.
macro_rules! columns {
    ($(($header:literal, $field:literal)),+ $(,)?) => {
        &[$($crate::cli::table::Column { header: $header, field: $field }),+]
    };
}
pub(crate) use columns;

/// A field as a cell: strings as they are, `-` for null or absent, `yes`/`no`, lists joined.
pub fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => if *b { "yes" } else { "no" }.to_owned(),
        Some(Value::Array(items)) if items.is_empty() => "-".to_owned(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| cell(Some(item)))
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
    }
}

/// `rows` under the headers of `columns`, each column as wide as its widest cell, two spaces
/// between columns, the last one unpadded.
pub fn render(columns: &[Column], rows: &[Value]) -> String {
    let lines: Vec<Vec<String>> = std::iter::once(
        columns
            .iter()
            .map(|column| column.header.to_owned())
            .collect(),
    )
    .chain(rows.iter().map(|row| {
        columns
            .iter()
            .map(|column| cell(row.get(column.field)))
            .collect()
    }))
    .collect();
    aligned(&lines)
}

/// One resource as `label  value` lines, the labels being its field names.
pub fn fields(fields: &[&str], resource: &Value) -> String {
    let lines: Vec<Vec<String>> = fields
        .iter()
        .map(|field| vec![(*field).to_owned(), cell(resource.get(*field))])
        .collect();
    aligned(&lines)
}

fn aligned(lines: &[Vec<String>]) -> String {
    let columns = lines.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            lines
                .iter()
                .map(|line| line[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in lines {
        let mut text = String::new();
        for (i, value) in line.iter().enumerate() {
            if i + 1 == columns {
                text.push_str(value);
            } else {
                text.push_str(value);
                let pad = widths[i] - value.chars().count() + 2;
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_are_aligned_and_cells_readable() {
        let rows = [
            json!({"id": "acme", "name": "Acme Corp", "active": true, "dns": ["a", "b"]}),
            json!({"id": "b", "name": null, "active": false, "dns": []}),
        ];
        let table = render(
            columns![
                ("ID", "id"),
                ("NAME", "name"),
                ("ACTIVE", "active"),
                ("DNS", "dns")
            ],
            &rows,
        );
        assert_eq!(
            table,
            "ID    NAME       ACTIVE  DNS\n\
             acme  Acme Corp  yes     a,b\n\
             b     -          no      -\n"
        );
        assert_eq!(
            fields(&["accepted", "reason"], &json!({"accepted": false})),
            "accepted  no\nreason    -\n"
        );
    }
}
