//! The `reason` of a traffic-log record: the row of the §4 decision table
//! (DESIGN.md) that decided, or what happened when the decided path could not
//! be followed or nothing was decided. Its log spelling, [`Reason::as_str`],
//! is used only where a record is written.

macro_rules! reasons {
    ($($(#[doc = $doc:literal])* $name:ident = $log:literal,)*) => {
        /// Why a flow got its action, as its record logs it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[doc = $doc])* $name,)*
        }

        impl Reason {
            /// Every reason, the §4 rows first in the order of the table.
            pub const ALL: &'static [Reason] = &[$(Reason::$name,)*];

            /// The log spelling (DESIGN.md §4).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => $log,)*
                }
            }
        }
    };
}

reasons! {
    /// The first bytes are not a TLS ClientHello.
    NonTls = "non_tls",
    /// The hello carries ECH and `ech` is pass.
    Ech = "ech",
    /// The SNI matches `exclude_sni`.
    Excluded = "excluded",
    /// (SNI, destination) is in the learned bypass cache.
    BypassCache = "bypass_cache",
    /// Nothing newer than TLS 1.1 is offered.
    LegacyTls = "legacy_tls",
    /// TLS 1.3 is offered and `tls13` is pass.
    Tls13 = "tls13",
    /// No SNI and `no_sni` is pass.
    NoSni = "no_sni",
    /// No row objected: inspected.
    Inspected = "inspected",
    /// The server asked for a client certificate: bypass-cached, replayed, passed.
    ClientAuth = "client_auth",
    /// The server speaks nothing we can terminate: bypass-cached, replayed, passed.
    UnsupportedServer = "unsupported_server",
    /// The upstream certificate did not verify (blocked, or forged untrusted and refused by the client).
    InvalidCertificate = "invalid_certificate",
    /// The client refused our verified chain (certificate pinning).
    Pinning = "pinning",
    /// The TLS interception failed for another reason (see the debug log).
    TlsError = "tls_error",
    /// The server refused the connection (RST) before any decision.
    ServerRefused = "server_refused",
    /// The server never answered the SYN.
    ServerTimeout = "server_timeout",
    /// The client never completed its TCP handshake.
    ClientTimeout = "client_timeout",
    /// A leg was reset before any decision.
    Reset = "reset",
    /// The flow ended (idle timeout, shutdown) before any decision.
    Undecided = "undecided",
    /// Not intercepted: the memory budget or the half-open cap was reached
    /// (DESIGN.md §12); passed or refused by the policy's `on_overload`.
    Overload = "overload",
    /// An inspection engine reset the connection (an IPS `drop`): the flow
    /// is logged as blocked so `tlsinspect logs --action blocked` finds it.
    Ips = "ips",
    /// The code handling the flow panicked (a bug in a TCP stack, TLS or an
    /// engine): the worker reset both legs and went on with the other flows.
    InternalError = "internal_error",
    /// An in-scope flow tracked without an interception context (the data
    /// plane alone, in its unit tests): forwarded unchanged.
    NotInterceptingYet = "not_intercepting_yet",
}
