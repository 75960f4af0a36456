//! The filters every certificate list takes (DESIGN §7b): alias substring, registration window,
//! a status where the collection has one; and the `WHERE` clause they become.

use super::sql::{params_from_iter, Row, Sql, SqlExt, Value};
use super::DbError;
use time::OffsetDateTime;

use super::{records, require_org, to_micros, GrantStatus, PageRequest, StoreError};
use crate::identity::OrgId;

/// `None` does not filter.
#[derive(Debug, Clone)]
pub struct ListFilter<S> {
    /// Case-insensitive (ASCII) substring of the alias.
    pub alias: Option<String>,
    /// Strictly after.
    pub registered_after: Option<OffsetDateTime>,
    /// Strictly before.
    pub registered_before: Option<OffsetDateTime>,
    pub status: Option<S>,
    /// Of the grant on the certificate's key (CA and signing certificates).
    pub grant_status: Option<GrantStatus>,
}

impl<S> Default for ListFilter<S> {
    fn default() -> Self {
        ListFilter {
            alias: None,
            registered_after: None,
            registered_before: None,
            status: None,
            grant_status: None,
        }
    }
}

/// A list query's `WHERE … ORDER BY … LIMIT …` with its numbered arguments: the org, the page
/// cursor over `(time, id)`, then each clause added.
pub(super) struct Where {
    sql: String,
    args: Vec<Value>,
    time: &'static str,
    id: &'static str,
}

impl Where {
    /// Rows of `org` after the page's cursor; `org`, `time` and `id` are column names (with
    /// their table alias, if any).
    pub(super) fn page(
        org_column: &str,
        time: &'static str,
        id: &'static str,
        org: &OrgId,
        page: &PageRequest,
    ) -> Where {
        let (after_micros, after_id) = page.after();
        Where {
            sql: format!(" WHERE {org_column} = ?1 AND ({time}, {id}) > (?2, ?3)"),
            args: vec![
                Value::Text(org.as_str().to_owned()),
                Value::Integer(after_micros),
                Value::Text(after_id.to_owned()),
            ],
            time,
            id,
        }
    }

    /// Adds ` AND <clause>`, each `?` in it standing for `value`.
    pub(super) fn and(&mut self, clause: &str, value: Value) {
        self.args.push(value);
        let n = self.args.len();
        self.sql.push_str(" AND ");
        self.sql.push_str(&clause.replace('?', &format!("?{n}")));
    }

    /// The alias and registration-window parts of `filter`.
    pub(super) fn filter<S>(&mut self, alias_column: &str, filter: &ListFilter<S>) {
        if let Some(alias) = filter.alias.as_deref().filter(|a| !a.is_empty()) {
            self.and(
                &format!("instr(lower({alias_column}), lower(?)) > 0"),
                Value::Text(alias.to_owned()),
            );
        }
        if let Some(t) = filter.registered_after {
            self.and(&format!("{} > ?", self.time), Value::Integer(to_micros(t)));
        }
        if let Some(t) = filter.registered_before {
            self.and(&format!("{} < ?", self.time), Value::Integer(to_micros(t)));
        }
        if let Some(status) = filter.grant_status {
            self.and(
                &format!(
                    "EXISTS (SELECT 1 FROM grants g WHERE g.holder_id = {} AND g.status = ?)",
                    self.id
                ),
                Value::Text(status.as_str().to_owned()),
            );
        }
    }

    /// Runs `{select}` with this clause on `conn` (checking `org` exists) and converts each row:
    /// the rows of one page and one more, in cursor order.
    pub(super) fn fetch<R, T>(
        self,
        conn: &dyn Sql,
        org: &OrgId,
        select: &str,
        page: &PageRequest,
        read: impl FnMut(&Row) -> Result<R, DbError>,
        into_record: impl FnMut(R) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let (where_sql, args) = self.finish(page);
        require_org(conn, org)?;
        let mut stmt = conn.prepare(&format!("{select}{where_sql}"))?;
        let rows = stmt.query_map(params_from_iter(args), read)?;
        records(rows, into_record)
    }

    /// The clause, ordered by the cursor key, limited to one row more than the page holds.
    fn finish(mut self, page: &PageRequest) -> (String, Vec<Value>) {
        self.args.push(Value::Integer(page.rows_to_fetch()));
        let n = self.args.len();
        self.sql
            .push_str(&format!(" ORDER BY {}, {} LIMIT ?{n}", self.time, self.id));
        (self.sql, self.args)
    }
}
