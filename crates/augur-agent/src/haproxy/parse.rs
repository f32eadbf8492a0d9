//! Pure parsers for HAProxy 2.6 runtime API answers: `show stat` (CSV), `show servers
//! state` (space separated, format version 1), `show info` (`Key: value`) and `get weight`.
//! Kept apart from the socket code so they are tested on captured answers.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use super::HaproxyError;

/// The administrative state the agent sets on a server (`set server B/S state …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Takes new traffic.
    Ready,
    /// Finishes what it has, takes no new traffic (persistent sessions excepted).
    Drain,
    /// Out of rotation; health checks stop.
    Maint,
}

impl State {
    /// The word HAProxy expects.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Drain => "drain",
            Self::Maint => "maint",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The operational state HAProxy derived from health checks (`srv_op_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpState {
    Stopped,
    Starting,
    Running,
    Stopping,
}

/// One server line of `show servers state <backend>`: the runtime configuration, which is
/// what [`super::Desired`] compares against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerState {
    pub backend: String,
    pub name: String,
    pub addr: SocketAddr,
    /// Operational state from checks.
    pub op_state: OpState,
    /// `srv_admin_state` bit field (maintenance and drain flags, forced or inherited).
    pub admin_flags: u32,
    /// The user weight (`srv_uweight`), what `set server … weight` sets.
    pub weight: u16,
    /// The weight from the configuration or `add server` (`srv_iweight`).
    pub initial_weight: u16,
}

// `srv_admin_state` bits, from HAProxy's `include/haproxy/server-t.h`.
const ADMF_MAINT_ANY: u32 = 0x01 | 0x02 | 0x04 | 0x20 | 0x40; // forced, inherited, config, resolver, hostname
const ADMF_DRAIN_ANY: u32 = 0x08 | 0x10; // inherited, forced

impl ServerState {
    /// The administrative state, maintenance taking precedence over drain.
    pub fn state(&self) -> State {
        if self.admin_flags & ADMF_MAINT_ANY != 0 {
            State::Maint
        } else if self.admin_flags & ADMF_DRAIN_ANY != 0 {
            State::Drain
        } else {
            State::Ready
        }
    }
}

/// Which kind of proxy element a `show stat` row describes (`type` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatKind {
    Frontend,
    Backend,
    Server,
    Listener,
}

/// One row of `show stat`. Counters missing in a row (empty CSV cells) read as 0; times are
/// HAProxy's averages over the last 1024 requests, in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStat {
    pub pxname: String,
    pub svname: String,
    pub kind: StatKind,
    /// `UP`, `DOWN`, `MAINT`, `DRAIN`, `no check`, `UP 1/2`, `OPEN` …
    pub status: String,
    /// Effective weight as HAProxy reports it, scaled relative to the backend: not the value
    /// given to `set server … weight` (that is `uweight`).
    pub weight: u64,
    /// User weight (servers only).
    pub uweight: Option<u64>,
    pub scur: u64,
    pub stot: u64,
    pub hrsp_2xx: u64,
    pub hrsp_4xx: u64,
    pub hrsp_5xx: u64,
    pub eresp: u64,
    pub econ: u64,
    pub qtime: u64,
    pub ctime: u64,
    pub rtime: u64,
    pub ttime: u64,
    /// e.g. `L7OK`, `L4CON`; `None` when the server has no check.
    pub check_status: Option<String>,
}

impl ServerStat {
    /// Whether the row is a server (not a frontend/backend/listener aggregate).
    pub fn is_server(&self) -> bool {
        self.kind == StatKind::Server
    }
}

/// The parts of `show info` the agent uses, chiefly to notice a reload (new pid, reset
/// uptime).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub pid: u32,
    pub uptime_sec: u64,
    pub version: String,
    /// Process start, seconds since the epoch (absent in old versions).
    pub start_time_sec: Option<u64>,
}

/// Answer of `get weight B/S`: `current (initial N)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weight {
    pub current: u16,
    pub initial: u16,
}

fn parse_err(command: &str, reason: impl Into<String>) -> HaproxyError {
    HaproxyError::Parse {
        command: command.to_owned(),
        reason: reason.into(),
    }
}

/// HAProxy's own message, for answers that are not in the expected shape.
fn rejected(command: &str, answer: &str) -> HaproxyError {
    HaproxyError::Rejected {
        command: command.to_owned(),
        message: answer.trim().to_owned(),
    }
}

pub(crate) fn parse_show_stat(
    command: &str,
    answer: &str,
) -> Result<Vec<ServerStat>, HaproxyError> {
    let mut lines = answer.lines();
    let header = match lines.next() {
        Some(h) if h.starts_with("# ") => &h[2..],
        _ => return Err(rejected(command, answer)),
    };
    let columns = header_columns(header.split(','));
    let index = |name: &str| column(&columns, command, name);
    let (px, sv, ty, status, weight, uweight) = (
        index("pxname")?,
        index("svname")?,
        index("type")?,
        index("status")?,
        index("weight")?,
        columns.get("uweight").copied(),
    );
    let counters = [
        "scur", "stot", "hrsp_2xx", "hrsp_4xx", "hrsp_5xx", "eresp", "econ", "qtime", "ctime",
        "rtime", "ttime",
    ]
    .map(index);
    let [scur, stot, h2, h4, h5, eresp, econ, qtime, ctime, rtime, ttime] = counters;
    let (scur, stot, h2, h4, h5, eresp, econ) = (scur?, stot?, h2?, h4?, h5?, eresp?, econ?);
    let (qtime, ctime, rtime, ttime) = (qtime?, ctime?, rtime?, ttime?);
    let check = index("check_status")?;

    let mut rows = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let cells: Vec<&str> = line.split(',').collect();
        let cell = |i: usize| cells.get(i).copied().unwrap_or("");
        let num = |i: usize| -> Result<u64, HaproxyError> {
            let c = cell(i);
            if c.is_empty() {
                Ok(0)
            } else {
                c.parse()
                    .map_err(|_| parse_err(command, format!("bad number {c:?} in row {line:?}")))
            }
        };
        let kind = match cell(ty) {
            "0" => StatKind::Frontend,
            "1" => StatKind::Backend,
            "2" => StatKind::Server,
            "3" => StatKind::Listener,
            other => return Err(parse_err(command, format!("unknown row type {other:?}"))),
        };
        rows.push(ServerStat {
            pxname: cell(px).to_owned(),
            svname: cell(sv).to_owned(),
            kind,
            status: cell(status).to_owned(),
            weight: num(weight)?,
            uweight: match uweight {
                Some(i) if !cell(i).is_empty() => Some(num(i)?),
                _ => None,
            },
            scur: num(scur)?,
            stot: num(stot)?,
            hrsp_2xx: num(h2)?,
            hrsp_4xx: num(h4)?,
            hrsp_5xx: num(h5)?,
            eresp: num(eresp)?,
            econ: num(econ)?,
            qtime: num(qtime)?,
            ctime: num(ctime)?,
            rtime: num(rtime)?,
            ttime: num(ttime)?,
            check_status: Some(cell(check))
                .filter(|c| !c.is_empty())
                .map(str::to_owned),
        });
    }
    Ok(rows)
}

pub(crate) fn parse_servers_state(
    command: &str,
    answer: &str,
) -> Result<Vec<ServerState>, HaproxyError> {
    let mut lines = answer.lines();
    match lines.next() {
        Some("1") => {}
        _ => return Err(rejected(command, answer)),
    }
    let header = lines
        .next()
        .and_then(|h| h.strip_prefix("# "))
        .ok_or_else(|| parse_err(command, "missing header line"))?;
    let columns = header_columns(header.split_whitespace());
    let index = |name: &str| column(&columns, command, name);
    let (be, name, addr, port) = (
        index("be_name")?,
        index("srv_name")?,
        index("srv_addr")?,
        index("srv_port")?,
    );
    let (op, admin, uweight, iweight) = (
        index("srv_op_state")?,
        index("srv_admin_state")?,
        index("srv_uweight")?,
        index("srv_iweight")?,
    );
    let mut servers = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let cells: Vec<&str> = line.split_whitespace().collect();
        let cell = |i: usize| {
            cells
                .get(i)
                .copied()
                .ok_or_else(|| parse_err(command, format!("short row {line:?}")))
        };
        fn num<T: std::str::FromStr>(command: &str, s: &str) -> Result<T, HaproxyError> {
            s.parse()
                .map_err(|_| parse_err(command, format!("bad number {s:?}")))
        }
        let ip: IpAddr = cell(addr)?
            .parse()
            .map_err(|_| parse_err(command, format!("bad address in row {line:?}")))?;
        servers.push(ServerState {
            backend: cell(be)?.to_owned(),
            name: cell(name)?.to_owned(),
            addr: SocketAddr::new(ip, num(command, cell(port)?)?),
            op_state: match cell(op)? {
                "0" => OpState::Stopped,
                "1" => OpState::Starting,
                "2" => OpState::Running,
                "3" => OpState::Stopping,
                other => return Err(parse_err(command, format!("unknown op state {other:?}"))),
            },
            admin_flags: num(command, cell(admin)?)?,
            weight: num(command, cell(uweight)?)?,
            initial_weight: num(command, cell(iweight)?)?,
        });
    }
    Ok(servers)
}

pub(crate) fn parse_info(command: &str, answer: &str) -> Result<Info, HaproxyError> {
    let fields: HashMap<&str, &str> = answer.lines().filter_map(|l| l.split_once(": ")).collect();
    if !fields.contains_key("Name") {
        return Err(rejected(command, answer));
    }
    let field = |k: &str| {
        fields
            .get(k)
            .copied()
            .ok_or_else(|| parse_err(command, format!("no {k:?} field")))
    };
    let number = |k: &str| -> Result<u64, HaproxyError> {
        field(k)?
            .trim()
            .parse()
            .map_err(|_| parse_err(command, format!("bad {k:?} field")))
    };
    Ok(Info {
        pid: u32::try_from(number("Pid")?).map_err(|_| parse_err(command, "pid out of range"))?,
        uptime_sec: number("Uptime_sec")?,
        version: field("Version")?.trim().to_owned(),
        start_time_sec: number("Start_time_sec").ok(),
    })
}

pub(crate) fn parse_weight(command: &str, answer: &str) -> Result<Weight, HaproxyError> {
    // "20 (initial 10)"
    let text = answer.trim();
    let parsed = text.split_once(" (initial ").and_then(|(cur, rest)| {
        let init = rest.strip_suffix(')')?;
        Some(Weight {
            current: cur.trim().parse().ok()?,
            initial: init.trim().parse().ok()?,
        })
    });
    parsed.ok_or_else(|| rejected(command, answer))
}

/// A header line's columns by name.
fn header_columns<'a>(names: impl Iterator<Item = &'a str>) -> HashMap<&'a str, usize> {
    names.enumerate().map(|(i, name)| (name, i)).collect()
}

/// The position of column `name`, or an error naming it and the command.
fn column(
    columns: &HashMap<&str, usize>,
    command: &str,
    name: &str,
) -> Result<usize, HaproxyError> {
    columns
        .get(name)
        .copied()
        .ok_or_else(|| parse_err(command, format!("no column {name:?} in header")))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from HAProxy 2.6.12 (columns after `uweight` trimmed).
    const STAT: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,
fe,FRONTEND,,,0,0,9985,0,0,0,0,0,0,,,,,OPEN,,,,,,,,,1,2,0,,,,0,0,0,0,,,,0,0,0,0,0,0,,0,0,0,,,0,0,0,0,,,,,,,,,,,,,,,,,,,,,http,,0,0,0,0,0,0,0,,,0,0,,,,,,,0,,,,,
app,s1,0,0,1,2,,40,0,0,,0,,3,2,0,0,DOWN,20,1,0,1,1,6,6,,1,3,1,,0,,2,0,,0,L4CON,,0,0,35,0,1,4,0,,,,0,0,0,,,,,-1,Connection refused,,0,0,7,9,,,,Layer4 connection problem,,2,3,0,,,,127.0.0.1:18081,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,1,20,
app,BACKEND,0,0,0,0,999,0,0,0,0,0,,0,0,0,0,DOWN,0,0,0,,2,3,3,,1,3,0,,0,,1,0,,0,,,,0,0,0,0,0,0,,,,0,0,0,0,0,0,0,-1,,,0,0,0,0,,,,,,,,,,,,,,http,roundrobin,,,,,,,0,0,0,0,0,,,0,0,0,0,0,,,,,
";

    #[test]
    fn show_stat_rows_are_typed() {
        let rows = parse_show_stat("show stat", STAT).unwrap();
        assert_eq!(rows.len(), 3);
        let s1 = &rows[1];
        assert!(s1.is_server());
        assert_eq!((s1.pxname.as_str(), s1.svname.as_str()), ("app", "s1"));
        assert_eq!(s1.status, "DOWN");
        assert_eq!((s1.weight, s1.uweight), (20, Some(20)));
        assert_eq!((s1.scur, s1.stot, s1.econ, s1.eresp), (1, 40, 3, 2));
        assert_eq!((s1.hrsp_2xx, s1.hrsp_4xx, s1.hrsp_5xx), (35, 1, 4));
        assert_eq!((s1.rtime, s1.ttime), (7, 9));
        assert_eq!(s1.check_status.as_deref(), Some("L4CON"));
        assert_eq!(rows[0].kind, StatKind::Frontend);
        assert_eq!(rows[2].kind, StatKind::Backend);
        assert_eq!(rows[2].check_status, None);
    }

    #[test]
    fn show_stat_error_answer_is_rejected() {
        let err = parse_show_stat("show stat", "Unknown command.\n\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "haproxy rejected `show stat`: Unknown command."
        );
    }

    const SERVERS: &str = "1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
3 app 1 s1 127.0.0.1 0 0 20 10 3 8 2 0 6 0 0 0 - 18081 - 0 0 - - 0
3 app 2 s2 127.0.0.1 2 8 5 5 0 1 0 0 0 0 0 0 - 18082 - 0 0 - - 0
3 app 3 s3 127.0.0.1 0 1 5 5 0 1 0 0 6 0 0 0 - 18083 - 0 0 - - 0

";

    #[test]
    fn servers_state_rows_are_typed() {
        let servers = parse_servers_state("show servers state app", SERVERS).unwrap();
        let summary: Vec<_> = servers
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    s.addr.port(),
                    s.state(),
                    s.weight,
                    s.initial_weight,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("s1", 18081, State::Ready, 20, 10),
                ("s2", 18082, State::Drain, 5, 5),
                ("s3", 18083, State::Maint, 5, 5),
            ]
        );
        assert_eq!(servers[1].op_state, OpState::Running);
    }

    #[test]
    fn servers_state_of_unknown_backend_is_rejected() {
        let err =
            parse_servers_state("show servers state nope", "Can't find backend.\n\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "haproxy rejected `show servers state nope`: Can't find backend."
        );
    }

    #[test]
    fn info_and_weight_parse() {
        let info = parse_info(
            "show info",
            "Name: HAProxy\nVersion: 2.6.12-1+deb12u4\nPid: 11630\nUptime_sec: 3\nStart_time_sec: 1795974914\n\n",
        )
        .unwrap();
        assert_eq!((info.pid, info.uptime_sec), (11630, 3));
        assert_eq!(info.version, "2.6.12-1+deb12u4");
        assert_eq!(info.start_time_sec, Some(1795974914));

        let w = parse_weight("get weight app/s1", "20 (initial 10)\n\n").unwrap();
        assert_eq!(
            w,
            Weight {
                current: 20,
                initial: 10
            }
        );
        let err = parse_weight("get weight app/x", "No such server.\n\n").unwrap_err();
        assert!(
            matches!(err, HaproxyError::Rejected { ref message, .. } if message == "No such server.")
        );
    }
}
