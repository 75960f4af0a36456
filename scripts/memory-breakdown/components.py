"""The components of the breakdown: edit this list when the code moves.

Each entry is (group, component, regex). A heap block's allocation stack is walked from the
innermost frame outwards (inlined frames included; each frame is written
"function @ dir/dir/file.rs:line" with Rust paths demangled, e.g.
"rumqttd::router::iobufs::Outgoing::new @ rumqttd-0.20.0/src/router/iobufs.rs:75"), and the block
belongs to the first entry, in this list's order, whose regex matches the first frame that any
entry matches. So the innermost match wins (a buffer rustls allocates is TLS even when the MQTT
session called rustls), and within one frame the earlier entry wins: put the specific entries
(a buffer of one type) before the broad ones (a crate or module).

A frame of our own code (OWN) that no entry matches stops the walk: the block goes to the
"other" row, and the report lists the stacks behind that row (their innermost frames past the
allocator). So when a change adds or moves an allocation in Portcullis to a place no entry
names, it shows up there instead of being counted in some outer caller's row. `run.sh --detail`
lists each component's largest block sizes and their frames, to check what an entry catches.
"""

COMPONENTS = [
    # rumqttd, the embedded broker: per-link buffers, the router's per-connection state.
    ("rumqttd", "link Incoming VecDeque<Packet>", r"iobufs::Incoming"),
    ("rumqttd", "Outgoing data/inflight/pubrel buffers + flume", r"iobufs::Outgoing"),
    ("rumqttd", "LinkRx cache VecDeque<Notification>", r"LinkRx"),
    ("rumqttd", "router AckLog (committed, recorded)", r"AckLog"),
    ("rumqttd", "router slabs (preallocated, fixed)",
     r"Router>?::new\b|Scheduler>?::with_capacity"),
    ("rumqttd", "filter logs (Segment, Waiters: per filter, kept)",
     r"rumqttd::segments|Waiters|DataLog|prepare_filter"),
    ("rumqttd", "graveyard (per client id that left, kept)", r"graveyard|save_metrics"),
    ("rumqttd", "other (Tracker, Connection, events)", r"rumqttd::"),
    # TLS: rustls (its record read buffer apart) and aws-lc.
    ("TLS", "rustls deframer (record read buffer)", r"DeframerVecBuffer"),
    ("TLS", "rustls other (connection state, send/recv buffers, keys, certificates)",
     r"rustls|aws_lc"),
    ("TLS", "Portcullis' TLS (handshake, client-chain cache)", r"portcullis::tls"),
    # The session's tokio task: the boxed future of the connection plus the task header.
    ("tokio", "session task (future + task cell)",
     r"tokio::task::spawn|runtime::task::core::Cell|bind_new_task|JoinSet"),
    ("tokio", "I/O registration", r"tokio::runtime::io"),
    # Portcullis' own state, by module (a future it boxes counts where it is boxed).
    ("portcullis", "metrics handles", r"metrics"),
    ("portcullis", "registry / session table / claims / fingerprints",
     r"portcullis::registry|portcullis::identity|portcullis::revocation|portcullis::pki"),
    ("portcullis", "broker link (link.rs, narrow.rs, coarse)", r"portcullis::broker"),
    ("portcullis", "MQTT session buffers (session.rs, forward/, admission, codec)",
     r"portcullis::mqtt|portcullis::codec"),
    ("portcullis", "listener", r"portcullis::listener"),
    ("portcullis", "store (device sightings, SQLite)",
     r"sqlite|portcullis::store|portcullis::devices"),
    ("portcullis", "admin API", r"utoipa|axum|portcullis::admin"),
]

# Our own code: a frame of it that no entry matches puts the block in "other".
OWN = r"^<?portcullis::"

# Frames skipped when a stack is shown (the allocator and the container's own growth code), so
# the first frames shown are the code that asked for the memory.
NOISE = (r"^<?(\w+ as )?<?(alloc|core|std|hashbrown|bytes|allocator_api2)::|^<(\w+ as <)?\[|"
         r"__rust|aligned_malloc|libheaptrack|libc\.so|^\?\?")
