//! The commands that change or describe the connection itself rather than the data: `AUTH`,
//! `HELLO`, `READONLY`/`READWRITE`, `RESET` and `CLIENT`'s name, id, info and list.

use bytes::Bytes;
use redis_protocol::resp2::types::BytesFrame;

use super::{bulk, error, simple, Connection};
use crate::client::ReadConsistency;
use crate::resp::command::ConnectionCommand;
use crate::resp::REDIS_VERSION;

const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

impl Connection {
    /// Run a command about the connection itself.
    pub(super) fn connection_command(&mut self, command: ConnectionCommand) -> BytesFrame {
        match command {
            ConnectionCommand::Auth(password) => {
                if self.context.secret.is_none() {
                    return error(
                        "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
                    );
                }
                if !self.proves(&password) {
                    return error(WRONGPASS);
                }
                self.authenticated = true;
                simple("OK")
            }
            ConnectionCommand::Hello {
                version,
                password,
                name,
            } => self.hello(version, password, name),
            ConnectionCommand::ReadOnly => {
                self.client.set_read_consistency(ReadConsistency::Stale);
                simple("OK")
            }
            ConnectionCommand::ReadWrite => {
                self.client
                    .set_read_consistency(ReadConsistency::Linearizable);
                simple("OK")
            }
            ConnectionCommand::Reset => {
                // As a new connection is: the first protocol, no name, authenticated only if
                // the cluster has no secret, linearizable reads. Its number and sessions stay.
                self.protocol = 2;
                self.name = None;
                self.transaction = None;
                self.authenticated = self.context.secret.is_none();
                self.client
                    .set_read_consistency(ReadConsistency::Linearizable);
                simple("RESET")
            }
            ConnectionCommand::ClientSetName(name) => {
                self.name = Some(name);
                simple("OK")
            }
            ConnectionCommand::ClientGetName => bulk(self.name.as_ref().map(|n| n.to_vec())),
            ConnectionCommand::ClientId => BytesFrame::Integer(self.id as i64),
            ConnectionCommand::ClientInfo => {
                BytesFrame::BulkString(self.line("client|info").into())
            }
            ConnectionCommand::ClientList(ids) => {
                // Each connection is a session of its own: this one is all it can list.
                let listed = ids.is_none_or(|ids| ids.contains(&self.id));
                let text = if listed {
                    self.line("client|list")
                } else {
                    String::new()
                };
                BytesFrame::BulkString(text.into())
            }
        }
    }

    /// Whether `password` is the cluster secret.
    fn proves(&self, password: &[u8]) -> bool {
        self.context
            .secret
            .as_ref()
            .is_some_and(|secret| secret.matches(password))
    }

    /// `HELLO`: authenticate and name the connection if asked, switch protocols, and describe
    /// the server.
    fn hello(
        &mut self,
        version: Option<i64>,
        password: Option<Bytes>,
        name: Option<Bytes>,
    ) -> BytesFrame {
        if let Some(password) = password {
            if !self.proves(&password) {
                return error(WRONGPASS);
            }
            self.authenticated = true;
        }
        if !self.authenticated {
            return error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
        }
        if let Some(version) = version {
            if !(2..=3).contains(&version) {
                return error("NOPROTO unsupported protocol version");
            }
            self.protocol = version;
        }
        if name.is_some() {
            self.name = name;
        }
        let field = |k: &'static str, v: BytesFrame| {
            [BytesFrame::BulkString(Bytes::from_static(k.as_bytes())), v]
        };
        let text = |t: &str| BytesFrame::BulkString(Bytes::copy_from_slice(t.as_bytes()));
        BytesFrame::Array(
            [
                field("server", text("viewkv")),
                field("version", text(REDIS_VERSION)),
                field("proto", BytesFrame::Integer(self.protocol)),
                field("id", BytesFrame::Integer(self.id as i64)),
                field("mode", text("standalone")),
                field("role", text("master")),
                field("modules", BytesFrame::Array(Vec::new())),
            ]
            .into_iter()
            .flatten()
            .collect(),
        )
    }

    /// This connection as `CLIENT INFO` and `CLIENT LIST` describe it, running `cmd`: Redis's
    /// `field=value` line, with the fields viewkv has (flag `r`: reads are stale, after
    /// `READONLY`).
    fn line(&self, cmd: &str) -> String {
        let name = self
            .name
            .as_ref()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_default();
        let flags = match self.client.read_consistency() {
            ReadConsistency::Stale => "r",
            ReadConsistency::Linearizable => "N",
        };
        let user = if self.authenticated { "default" } else { "" };
        format!(
            "id={} addr={} laddr={} name={name} age={} idle=0 flags={flags} db=0 multi=-1 cmd={cmd} user={user} resp={}\n",
            self.id,
            self.peer,
            self.local,
            self.since.elapsed().as_secs(),
            self.protocol
        )
    }
}
