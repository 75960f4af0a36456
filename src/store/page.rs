//! Cursor paging. Every list is ordered by a `(time, id)` key that never changes for a row, and a
//! cursor is the key of the last row returned, base64url-encoded so clients treat it as opaque:
//! rows inserted or deleted between two pages neither repeat nor shift the others.

use base64::Engine;
use time::OffsetDateTime;

/// Default page size.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page size.
pub const MAX_LIMIT: u32 = 500;

/// A position in a list: just after the row with this key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub(crate) micros: i64,
    pub(crate) id: String,
}

/// A cursor that this store did not make.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cursor")]
pub struct BadCursor;

impl Cursor {
    pub(crate) fn after(micros: i64, id: &str) -> Cursor {
        Cursor {
            micros,
            id: id.to_owned(),
        }
    }

    pub fn parse(s: &str) -> Result<Cursor, BadCursor> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| BadCursor)?;
        let text = String::from_utf8(bytes).map_err(|_| BadCursor)?;
        let (micros, id) = text.split_once('.').ok_or(BadCursor)?;
        let micros = micros.parse().map_err(|_| BadCursor)?;
        // Resource ids, and client ids (the session list: `d:acme:sensor:dev1`).
        let id_ok = !id.is_empty() && id.len() <= 256 && id.bytes().all(|b| b.is_ascii_graphic());
        if !id_ok {
            return Err(BadCursor);
        }
        Ok(Cursor::after(micros, id))
    }

    pub fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{}.{}", self.micros, self.id))
    }
}

/// `t` as cursors hold it (unix microseconds), for lists paged outside the store.
pub(crate) fn micros(t: OffsetDateTime) -> i64 {
    super::to_micros(t)
}

/// Which page: at most `limit` rows after `cursor` (from the start when `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: u32,
    pub cursor: Option<Cursor>,
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest {
            limit: DEFAULT_LIMIT,
            cursor: None,
        }
    }
}

impl PageRequest {
    /// `limit` clamped to `1..=MAX_LIMIT`.
    pub(crate) fn limit(&self) -> u32 {
        self.limit.clamp(1, MAX_LIMIT)
    }

    /// How many rows a list query fetches: one more than the page holds, so that
    /// [`Page::from_rows`] can tell whether there is a next page.
    pub(crate) fn rows_to_fetch(&self) -> i64 {
        i64::from(self.limit()) + 1
    }

    /// The cursor's key, or one before every row.
    pub(crate) fn after(&self) -> (i64, &str) {
        match &self.cursor {
            Some(c) => (c.micros, c.id.as_str()),
            None => (i64::MIN, ""),
        }
    }
}

/// One page of a list; `next_cursor` is `None` on the last page.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows fetched in key order: the extra row only says
    /// that there is a next page.
    pub(crate) fn from_rows(
        mut rows: Vec<T>,
        limit: u32,
        key: impl Fn(&T) -> (OffsetDateTime, &str),
    ) -> Page<T> {
        let limit = limit as usize;
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|last| {
                let (t, id) = key(last);
                Cursor::after(super::to_micros(t), id).encode()
            })
        } else {
            None
        };
        Page {
            items: rows,
            next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip_and_garbage() {
        let c = Cursor::after(1_700_000_000_123_456, "0123abcd");
        assert_eq!(Cursor::parse(&c.encode()).unwrap(), c);
        let negative = Cursor::after(-5, "ff");
        assert_eq!(Cursor::parse(&negative.encode()).unwrap(), negative);
        let client_id = Cursor::after(7, "d:acme:sensor:dev.1_a");
        assert_eq!(Cursor::parse(&client_id.encode()).unwrap(), client_id);
        // Empty id, a space in it, 257 bytes.
        let spaced = Cursor::after(1, "a b").encode();
        let long = Cursor::after(1, &"a".repeat(257)).encode();
        for bad in ["", "!!!", "bm9kb3Q", "MTIzLg", "YWJjLmZm", &spaced, &long] {
            assert_eq!(Cursor::parse(bad), Err(BadCursor), "{bad}");
        }
    }
}
