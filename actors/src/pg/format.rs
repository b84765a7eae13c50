//! The layout of a cluster dump: one plain SQL file that `psql` replays by hand, with section
//! markers the engine uses to replay each database in its own transaction.
//!
//! ```text
//! -- vardo-backup cluster dump v1 <nonce>
//! -- (comment lines: what this is and how to restore it by hand)
//! -- vardo-backup <nonce> roles
//! <pg_dumpall --roles-only, each CREATE ROLE made idempotent>
//! -- vardo-backup <nonce> create <hex name>
//! <SELECT 'CREATE DATABASE …' WHERE NOT EXISTS (…)\gexec, then \connect to it>
//! -- vardo-backup <nonce> database <hex name>
//! <pg_dump --clean --if-exists of that database>
//! … (create, database) for every database …
//! -- vardo-backup <nonce> end
//! ```
//!
//! The nonce is random per dump, so a marker cannot be planted in advance by data that ends up in
//! the dump (a row of a COPY is one line and could read like a marker; it cannot guess the nonce).
//! Marker lines are SQL comments: by hand, psql skips them. A dump without the first line is a
//! dump of one database (what vardo-backup wrote before cluster dumps) and is replayed whole.

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt as _};

use crate::stream::ByteStream;

const HEADER: &str = "-- vardo-backup cluster dump v1 ";
/// The longest marker line the reader accepts (names are at most 63 bytes, 126 in hex).
const MAX_MARKER: usize = 512;

/// One part of a cluster dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Section {
    /// The cluster's roles, replayed in one transaction in the maintenance database.
    Roles,
    /// Creates a database when it is missing (not transactional: `CREATE DATABASE` cannot be).
    Create(String),
    /// One database's dump, replayed in one transaction connected to it.
    Database(String),
    /// The end of the dump: everything before it arrived.
    End,
}

/// A random nonce for one dump.
pub fn nonce() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The first lines of a dump.
pub fn header(nonce: &str) -> String {
    format!(
        "{HEADER}{nonce}\n\
         -- A dump of a whole PostgreSQL cluster: its roles, then every database that is not a \
         template.\n\
         -- Restore by hand into a running server: psql -X -v ON_ERROR_STOP=1 -U postgres -d postgres -f <this file>\n\
         -- (each database is created if it is missing; its objects are dropped and recreated).\n"
    )
}

/// The marker line that opens `section` (on a line of its own).
pub fn marker(nonce: &str, section: &Section) -> String {
    let what = match section {
        Section::Roles => "roles".to_owned(),
        Section::Create(name) => format!("create {}", hex::encode(name)),
        Section::Database(name) => format!("database {}", hex::encode(name)),
        Section::End => "end".to_owned(),
    };
    format!("\n-- vardo-backup {nonce} {what}\n")
}

/// What a dump's reader yields, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// The dump is a single database's (no cluster header): all that follows is its SQL.
    Single,
    /// A cluster dump: sections follow.
    Cluster,
    /// The start of a section; the bytes that follow belong to it.
    Start(Section),
    /// SQL of the current section (or, before the first section, the header's comments).
    Sql(Bytes),
}

/// Reads a dump as pieces: which layout it has, then its sections and their SQL. SQL bytes are
/// passed on as they arrive (never a whole section at once); only a line start that may be a
/// marker is held until its end. A malformed marker, or a second `end`, is an error.
pub fn pieces(sql: ByteStream) -> impl Stream<Item = std::io::Result<Piece>> + Send {
    async_stream::try_stream! {
        let mut sql = sql;
        let mut first = BytesMut::new();
        let mut reader = None;
        while let Some(chunk) = sql.next().await {
            let chunk = chunk?;
            let Some(reader) = reader.as_mut() else {
                first.extend_from_slice(&chunk);
                let Some(layout) = layout(&first) else { continue };
                let (kind, mut r) = layout?;
                yield kind;
                let held = first.split().freeze();
                for piece in r.push(held)? {
                    yield piece;
                }
                reader = Some(r);
                continue;
            };
            for piece in reader.push(chunk)? {
                yield piece;
            }
        }
        match reader {
            Some(r) => {
                for piece in r.finish()? {
                    yield piece;
                }
            }
            None => {
                // Shorter than a header's first line: a (tiny) single-database dump.
                yield Piece::Single;
                if !first.is_empty() {
                    yield Piece::Sql(first.freeze());
                }
            }
        }
    }
}

/// What a dump read to its end holds: its size, and for a cluster dump its databases.
#[derive(Debug, Default)]
pub struct Outline {
    pub bytes: u64,
    /// None for a dump of one database.
    pub databases: Option<Vec<String>>,
}

impl Outline {
    pub fn describe(&self) -> String {
        match &self.databases {
            None => format!("a dump of one database, {} bytes of SQL", self.bytes),
            Some(dbs) => format!(
                "a cluster dump of the roles and {} database{} ({}) to its end marker, {} bytes of SQL",
                dbs.len(),
                if dbs.len() == 1 { "" } else { "s" },
                dbs.join(", "),
                self.bytes
            ),
        }
    }
}

/// Reads a dump to its end; a cluster dump must reach its end marker.
pub async fn outline(sql: ByteStream) -> std::io::Result<Outline> {
    let mut outline = Outline::default();
    let mut ended = false;
    let mut pieces = std::pin::pin!(pieces(sql));
    while let Some(piece) = pieces.next().await {
        match piece? {
            Piece::Cluster => outline.databases = Some(Vec::new()),
            Piece::Start(Section::Database(name)) => {
                outline.databases.get_or_insert_with(Vec::new).push(name);
            }
            Piece::Start(Section::End) => ended = true,
            Piece::Sql(b) => outline.bytes += b.len() as u64,
            Piece::Single | Piece::Start(_) => {}
        }
    }
    if outline.databases.is_some() && !ended {
        return Err(malformed("it ends before its end marker"));
    }
    Ok(outline)
}

/// Decides the layout once enough of the first line is here.
fn layout(first: &[u8]) -> Option<std::io::Result<(Piece, Reader)>> {
    let line_end = first.iter().position(|&b| b == b'\n');
    let seen = line_end.map_or(first, |end| &first[..end]);
    let common = seen.len().min(HEADER.len());
    if seen[..common] != HEADER.as_bytes()[..common] {
        return Some(Ok((Piece::Single, Reader::single())));
    }
    let end = match line_end {
        Some(end) if end >= HEADER.len() => end,
        Some(_) => return Some(Ok((Piece::Single, Reader::single()))),
        None if first.len() > MAX_MARKER => return Some(Err(malformed("its header is too long"))),
        None => return None,
    };
    let nonce = &first[HEADER.len()..end];
    if nonce.is_empty() || !nonce.iter().all(u8::is_ascii_alphanumeric) {
        return Some(Err(malformed("its header has no valid nonce")));
    }
    let nonce = String::from_utf8_lossy(nonce).into_owned();
    Some(Ok((Piece::Cluster, Reader::cluster(&nonce))))
}

/// Splits SQL at marker lines.
struct Reader {
    /// `-- vardo-backup <nonce> `; empty for a single-database dump (no markers).
    prefix: Vec<u8>,
    /// At the start of a line.
    line_start: bool,
    /// The start of a line that may still turn out to be a marker.
    held: Vec<u8>,
    ended: bool,
}

impl Reader {
    fn single() -> Self {
        Self {
            prefix: Vec::new(),
            line_start: false,
            held: Vec::new(),
            ended: false,
        }
    }

    fn cluster(nonce: &str) -> Self {
        Self {
            prefix: format!("-- vardo-backup {nonce} ").into_bytes(),
            line_start: true,
            held: Vec::new(),
            ended: false,
        }
    }

    fn push(&mut self, chunk: Bytes) -> std::io::Result<Vec<Piece>> {
        let mut out = Vec::new();
        if self.prefix.is_empty() {
            if !chunk.is_empty() {
                out.push(Piece::Sql(chunk));
            }
            return Ok(out);
        }
        let mut at = 0;
        while at < chunk.len() {
            if self.line_start {
                // Hold bytes while they can still be a marker.
                let newline = chunk[at..].iter().position(|&b| b == b'\n');
                let take = newline.map_or(chunk.len() - at, |n| n + 1);
                self.held.extend_from_slice(&chunk[at..at + take]);
                at += take;
                let line = self.held.strip_suffix(b"\n").unwrap_or(&self.held);
                let common = line.len().min(self.prefix.len());
                let may_be_marker = line[..common] == self.prefix[..common];
                if may_be_marker && newline.is_some() && line.len() >= self.prefix.len() {
                    let what = line[self.prefix.len()..].to_vec();
                    let section = self.parse(&what)?;
                    self.held.clear();
                    out.push(Piece::Start(section));
                    continue;
                }
                if may_be_marker && newline.is_none() {
                    if self.held.len() > MAX_MARKER {
                        return Err(malformed("a marker line is too long"));
                    }
                    continue;
                }
                // Not a marker: pass the held bytes on as SQL.
                let held = std::mem::take(&mut self.held);
                self.sql(&mut out, Bytes::from(held))?;
                self.line_start = newline.is_some();
            } else {
                let newline = chunk[at..].iter().position(|&b| b == b'\n');
                let end = newline.map_or(chunk.len(), |n| at + n + 1);
                self.sql(&mut out, chunk.slice(at..end))?;
                at = end;
                self.line_start = newline.is_some();
            }
        }
        Ok(out)
    }

    fn sql(&self, out: &mut Vec<Piece>, bytes: Bytes) -> std::io::Result<()> {
        if self.ended && bytes.iter().any(|b| !b.is_ascii_whitespace()) {
            return Err(malformed("SQL follows the end marker"));
        }
        out.push(Piece::Sql(bytes));
        Ok(())
    }

    fn parse(&mut self, what: &[u8]) -> std::io::Result<Section> {
        let what = std::str::from_utf8(what).map_err(|_| malformed("a marker is not UTF-8"))?;
        let name = |hex_name: &str| {
            hex::decode(hex_name)
                .ok()
                .and_then(|n| String::from_utf8(n).ok())
                .ok_or_else(|| malformed("a marker's database name is not valid"))
        };
        let section = match what.split_once(' ') {
            None if what == "roles" => Section::Roles,
            None if what == "end" => Section::End,
            Some(("create", n)) => Section::Create(name(n)?),
            Some(("database", n)) => Section::Database(name(n)?),
            _ => return Err(malformed("unknown marker")),
        };
        if self.ended {
            return Err(malformed("a section follows the end marker"));
        }
        self.ended = section == Section::End;
        Ok(section)
    }

    fn finish(mut self) -> std::io::Result<Vec<Piece>> {
        let mut out = Vec::new();
        if !self.held.is_empty() {
            let held = std::mem::take(&mut self.held);
            self.sql(&mut out, Bytes::from(held))?;
        }
        Ok(out)
    }
}

fn malformed(why: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("the cluster dump is malformed: {why}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dump(nonce: &str, body: &[u8]) -> Vec<u8> {
        let mut d = header(nonce).into_bytes();
        d.extend(marker(nonce, &Section::Roles).bytes());
        d.extend_from_slice(b"CREATE ROLE a;\n");
        d.extend(marker(nonce, &Section::Create("x y'\"".to_owned())).bytes());
        d.extend_from_slice(b"SELECT 1\\gexec\n");
        d.extend(marker(nonce, &Section::Database("x y'\"".to_owned())).bytes());
        d.extend_from_slice(body);
        d.extend(marker(nonce, &Section::End).bytes());
        d
    }

    /// Reads `bytes` cut into chunks at `cuts`; the pieces with adjacent SQL merged.
    fn read(bytes: &[u8], cuts: &[usize]) -> std::io::Result<Vec<Piece>> {
        let mut chunks = Vec::new();
        let mut last = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        for c in cuts.into_iter().chain([bytes.len()]) {
            chunks.push(Ok(Bytes::copy_from_slice(&bytes[last..c])));
            last = c;
        }
        let stream: ByteStream = futures::stream::iter(chunks).boxed();
        let pieces = futures::executor::block_on(pieces(stream).collect::<Vec<_>>());
        let mut merged: Vec<Piece> = Vec::new();
        for p in pieces {
            match (p?, merged.last_mut()) {
                (Piece::Sql(b), Some(Piece::Sql(prev))) => {
                    let mut both = prev.to_vec();
                    both.extend_from_slice(&b);
                    *prev = Bytes::from(both);
                }
                (Piece::Sql(b), _) if b.is_empty() => {}
                (p, _) => merged.push(p),
            }
        }
        Ok(merged)
    }

    proptest! {
        /// However the bytes arrive, the sections and their SQL are the same; SQL that looks like a
        /// marker without the nonce (a COPY row, say) stays SQL.
        #[test]
        fn chunking_never_changes_the_sections(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let nonce = "0123abcd";
            let mut body = body;
            body.extend_from_slice(b"\n-- vardo-backup 0123abce end\n-- vardo-backup end\nx");
            let bytes = dump(nonce, &body);
            let pieces = read(&bytes, &cuts).expect("read");
            let sections: Vec<_> = pieces.iter().filter_map(|p| match p {
                Piece::Start(s) => Some(s.clone()),
                _ => None,
            }).collect();
            let name = "x y'\"".to_owned();
            prop_assert_eq!(sections, vec![
                Section::Roles, Section::Create(name.clone()), Section::Database(name), Section::End,
            ]);
            prop_assert_eq!(&pieces[0], &Piece::Cluster);
            // The database section's SQL is the body exactly (plus the newline before the end
            // marker), unless the random body itself happens to hold a line with the nonce.
            let db_sql = pieces.iter().skip_while(|p| !matches!(p, Piece::Start(Section::Database(_))))
                .nth(1);
            let mut expected = body.clone();
            expected.push(b'\n');
            if !body.windows(8).any(|w| w == nonce.as_bytes()) {
                prop_assert_eq!(db_sql, Some(&Piece::Sql(Bytes::from(expected))));
            }
        }

        #[test]
        fn a_dump_without_the_header_is_one_database(
            body in proptest::collection::vec(any::<u8>(), 1..300),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            prop_assume!(!body.starts_with(b"--"));
            let pieces = read(&body, &cuts).expect("read");
            prop_assert_eq!(pieces, vec![Piece::Single, Piece::Sql(Bytes::from(body))]);
        }
    }

    #[test]
    fn a_legacy_dump_is_one_database() {
        let legacy = b"--\n-- PostgreSQL database dump\n--\nCREATE TABLE t ();\n";
        let pieces = read(legacy, &[3, 20]).expect("read");
        assert_eq!(pieces[0], Piece::Single);
        assert_eq!(pieces[1], Piece::Sql(Bytes::from_static(legacy)));
    }

    #[test]
    fn an_outline_needs_the_end_marker() {
        let whole = dump("n2", b"COPY t FROM stdin;\n1\n\\.\n");
        let read = |bytes: Vec<u8>| {
            let s: ByteStream = futures::stream::iter([Ok(Bytes::from(bytes))]).boxed();
            futures::executor::block_on(outline(s))
        };
        let outline = read(whole.clone()).expect("whole");
        assert_eq!(outline.databases, Some(vec!["x y'\"".to_owned()]));
        let cut = whole[..whole.len() - 10].to_vec();
        assert!(read(cut).is_err());
    }

    #[test]
    fn sql_after_the_end_or_an_unknown_marker_is_refused() {
        let nonce = "n1";
        let mut after_end = dump(nonce, b"x\n");
        after_end.extend_from_slice(b"DROP TABLE t;\n");
        assert!(read(&after_end, &[]).is_err());
        let mut unknown = dump(nonce, b"x\n");
        unknown.extend(b"-- vardo-backup n1 shell rm\n".iter());
        assert!(read(&unknown, &[]).is_err());
    }
}
