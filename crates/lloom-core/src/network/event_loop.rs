//! [`EventLoop`]: the one task that owns the swarm.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance};
use libp2p::kad::{self, store::RecordStore};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, autonat, dcutr, identify, mdns, relay};
use tokio::sync::{mpsc, oneshot};

use super::NetworkConfig;
use super::behaviour::{Behaviour, BehaviourEvent};
use super::connected::ConnectedPeers;
use super::dht::{self, DhtQueries};
use super::event::{NetworkEvent, NetworkStats, RegistryResponder};
use super::handle::Command;
use super::listen_addrs::ListenAddrs;
use super::redial::{Redial, Redials};
use super::relay::{Reachability, Reservations, is_relayed};
use crate::announce::{AnnouncementLimits, SignedAnnouncement, verify_announcement};
use crate::error::{Error, Result};
use crate::registry_query::{RegistryRequest, RegistryResponse};
use crate::verify::{VerifyPolicy, unix_now};

/// Invalid messages from one peer before it is disconnected.
const MISBEHAVIOUR_LIMIT: u32 = 5;
/// How long a stopping loop keeps flushing responses already queued.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// How long `start` waits for the listeners to come up.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the loop looks for peers due for another dial (only while one waits).
const REDIAL_TICK: Duration = Duration::from_millis(250);

/// A per-peer token bucket for inbound registry queries.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// A dial to one peer and the [`Command::Connect`] callers waiting for its outcome.
#[derive(Debug)]
struct PendingDial {
    peer: PeerId,
    waiting: Vec<oneshot::Sender<Result<()>>>,
}

impl PendingDial {
    /// Answers every caller: `Ok`, or the failure described by `why`.
    fn answer(self, outcome: std::result::Result<(), &str>) {
        for reply in self.waiting {
            let _ = reply.send(outcome.map_err(|why| Error::Dial(why.to_owned().into())));
        }
    }
}

/// Owns the swarm; spawn [`EventLoop::run`] on a tokio runtime.
pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetworkEvent>,
    policy: VerifyPolicy,
    limits: AnnouncementLimits,
    topic: IdentTopic,
    pending_queries: HashMap<OutboundRequestId, oneshot::Sender<Result<RegistryResponse>>>,
    /// Dials started by [`Command::Connect`], answered with their outcome.
    pending_dials: HashMap<ConnectionId, PendingDial>,
    buckets: HashMap<PeerId, Bucket>,
    queries_per_sec: f64,
    misbehaviour: HashMap<PeerId, u32>,
    responses_in_flight: usize,
    stats: NetworkStats,
    dht: DhtQueries,
    advertise_listen_addrs: bool,
    reservations: Reservations,
    connected: ConnectedPeers,
    listening: ListenAddrs,
    /// Peers dialled again: bootstrap peers whenever disconnected, peers mDNS reported after a
    /// failed dial.
    redials: Redials,
}

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop")
            .field("peer_id", self.swarm.local_peer_id())
            .finish_non_exhaustive()
    }
}

impl EventLoop {
    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<NetworkEvent>,
        policy: VerifyPolicy,
        limits: AnnouncementLimits,
        config: &NetworkConfig,
        topic: IdentTopic,
    ) -> Self {
        Self {
            swarm,
            commands,
            events,
            policy,
            limits,
            topic,
            pending_queries: HashMap::new(),
            pending_dials: HashMap::new(),
            buckets: HashMap::new(),
            queries_per_sec: f64::from(config.registry_queries_per_sec.max(1)),
            misbehaviour: HashMap::new(),
            responses_in_flight: 0,
            stats: NetworkStats::default(),
            dht: DhtQueries::default(),
            advertise_listen_addrs: config.advertise_listen_addrs,
            reservations: Reservations::new(config.relay),
            connected: ConnectedPeers::default(),
            listening: ListenAddrs::default(),
            redials: Redials::new(limits.max_addrs),
        }
    }

    /// The view of connected peers this loop keeps current, for handles to read.
    pub(crate) fn connected_view(&self) -> ConnectedPeers {
        self.connected.clone()
    }

    /// Starts the listeners, waits until each has an address, and dials the bootstrap peers.
    pub(crate) async fn listen_and_bootstrap(&mut self, config: &NetworkConfig) -> Result<()> {
        let mut waiting = HashSet::new();
        for addr in &config.listen_addrs {
            let id =
                self.swarm.listen_on(addr.clone()).map_err(|e| Error::NetworkSetup(Box::new(e)))?;
            waiting.insert(id);
        }
        let deadline = tokio::time::Instant::now() + LISTEN_TIMEOUT;
        while !waiting.is_empty() {
            let event = tokio::time::timeout_at(deadline, self.swarm.select_next_some())
                .await
                .map_err(|_| Error::Timeout(LISTEN_TIMEOUT))?;
            if let SwarmEvent::NewListenAddr { listener_id, .. } = &event {
                waiting.remove(listener_id);
            }
            self.on_swarm_event(event);
        }
        for addr in &config.bootstrap {
            if let Some(Protocol::P2p(peer)) = addr.iter().last() {
                let transport: Multiaddr =
                    addr.iter().filter(|p| !matches!(p, Protocol::P2p(_))).collect();
                self.swarm.behaviour_mut().kad.add_address(&peer, transport.clone());
                self.redials.keep(peer, vec![transport]);
            }
            self.swarm.dial(addr.clone()).map_err(|e| Error::Dial(Box::new(e)))?;
        }
        if !config.bootstrap.is_empty() {
            // Only fails without known peers, which the loop above rules out.
            let _ = self.swarm.behaviour_mut().kad.bootstrap();
        }
        Ok(())
    }

    /// Runs until every [`NetworkHandle`](super::NetworkHandle) is dropped, then flushes the
    /// responses already queued (for at most one second) and stops.
    pub async fn run(mut self) {
        let mut redial = tokio::time::interval(REDIAL_TICK);
        redial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                _ = redial.tick(), if self.redials.waiting() => self.redial(),
            }
        }
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        while self.responses_in_flight > 0 {
            match tokio::time::timeout_at(deadline, self.swarm.select_next_some()).await {
                Ok(event) => self.on_swarm_event(event),
                Err(_) => break,
            }
        }
        tracing::debug!("network event loop stopped: all handles dropped");
    }

    fn send_registry_response(&mut self, responder: RegistryResponder, response: RegistryResponse) {
        // Fails only if the peer went away; nothing left to do then.
        if self.swarm.behaviour_mut().registry.send_response(responder.0, response).is_ok() {
            self.responses_in_flight += 1;
        }
    }

    fn emit(&mut self, event: NetworkEvent) {
        if self.events.try_send(event).is_err() {
            self.stats.events_dropped += 1;
        }
    }

    fn with_p2p(&self, addr: Multiaddr) -> Multiaddr {
        addr.with_p2p(*self.swarm.local_peer_id()).unwrap_or_else(|a| a)
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Dial { addr, reply } => {
                let result = self.swarm.dial(addr).map_err(|e| Error::Dial(Box::new(e)));
                let _ = reply.send(result);
            }
            Command::Connect { peer, addrs, reply } => self.connect(peer, addrs, reply),
            Command::Publish { announcement, reply } => {
                let result = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(self.topic.clone(), announcement.encode())
                    .map(|_| ())
                    .map_err(|e| Error::Publish(Box::new(e)));
                let _ = reply.send(result);
            }
            #[cfg(feature = "test-utils")]
            Command::PublishRaw { data, reply } => {
                let result = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(self.topic.clone(), data)
                    .map(|_| ())
                    .map_err(|e| Error::Publish(Box::new(e)));
                let _ = reply.send(result);
            }
            Command::QueryRegistry { peer, request, reply } => {
                let id = self.swarm.behaviour_mut().registry.send_request(&peer, request);
                self.pending_queries.insert(id, reply);
            }
            Command::RespondRegistry { responder, response } => {
                self.send_registry_response(responder, *response);
            }
            Command::ListenAddrs { reply } => {
                let addrs = self.swarm.listeners().cloned().map(|a| self.with_p2p(a)).collect();
                let _ = reply.send(addrs);
            }
            Command::Disconnect { peer, reply } => {
                let _ = reply.send(self.swarm.disconnect_peer_id(peer).is_ok());
            }
            Command::ConnectedPeers { reply } => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::Stats { reply } => {
                let (bootstrap_peers, bootstrap_connected) = self.redials.bootstrap();
                let stats = NetworkStats {
                    reachability: self.reservations.reachability(),
                    bootstrap_peers: bootstrap_peers as u64,
                    bootstrap_connected: bootstrap_connected as u64,
                    ..self.stats.clone()
                };
                let _ = reply.send(stats);
            }
            Command::Provide { key, reply } => {
                match self.swarm.behaviour_mut().kad.start_providing(key) {
                    Ok(id) => self.dht.await_put(id, reply),
                    Err(e) => {
                        let _ = reply.send(Err(Error::Dht(e.to_string())));
                    }
                }
            }
            Command::FindProviders { key, reply } => {
                let id = self.swarm.behaviour_mut().kad.get_providers(key);
                self.dht.await_providers(id, reply);
            }
            Command::PutRecord { record, reply } => {
                match self.swarm.behaviour_mut().kad.put_record(record, kad::Quorum::One) {
                    Ok(id) => self.dht.await_put(id, reply),
                    Err(e) => {
                        let _ = reply.send(Err(Error::Dht(e.to_string())));
                    }
                }
            }
            Command::GetRecord { key, reply } => {
                let id = self.swarm.behaviour_mut().kad.get_record(key);
                self.dht.await_records(id, reply);
            }
        }
    }

    /// Dials `peer` on all of `addrs` as one dial, whose outcome answers `reply`; while a dial
    /// to `peer` is under way, `reply` waits for that one instead (one connection, not one
    /// per caller, and a slow dial holds up only those waiting for the same peer).
    fn connect(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, reply: oneshot::Sender<Result<()>>) {
        if self.swarm.is_connected(&peer) {
            let _ = reply.send(Ok(()));
            return;
        }
        // Callers that stopped waiting leave nothing behind beyond the next dial.
        self.pending_dials.retain(|_, dial| {
            dial.waiting.retain(|waiting| !waiting.is_closed());
            !dial.waiting.is_empty()
        });
        if let Some(dial) = self.pending_dials.values_mut().find(|dial| dial.peer == peer) {
            dial.waiting.push(reply);
            return;
        }
        let addrs = addrs.into_iter().take(self.limits.max_addrs).collect();
        // `Disconnected`, not the default `DisconnectedAndNotDialing`: a dial already under
        // way (a bootstrap, mDNS) would leave this one without an outcome of its own.
        let opts =
            DialOpts::peer_id(peer).condition(PeerCondition::Disconnected).addresses(addrs).build();
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.pending_dials.insert(id, PendingDial { peer, waiting: vec![reply] });
            }
            Err(error) => {
                let _ = reply.send(Err(Error::Dial(super::dial_error::describe(&error).into())));
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                // A relayed address is reachable by construction; others only where the
                // configuration says the node listens where peers can reach it.
                if self.advertise_listen_addrs || is_relayed(&address) {
                    self.swarm.add_external_address(address.clone());
                }
                let new = self.listening.add(&address);
                let addr = self.with_p2p(address);
                if !new {
                    tracing::debug!(%addr, "listen address reported again (reservation renewed)");
                    return;
                }
                tracing::info!(%addr, "listening");
                self.emit(NetworkEvent::Listening(addr));
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listening.remove(&address);
                self.swarm.remove_external_address(&address);
            }
            SwarmEvent::ListenerClosed { listener_id, addresses, .. } => {
                for address in &addresses {
                    self.listening.remove(address);
                }
                self.reservations.on_listener_closed(listener_id);
            }
            SwarmEvent::ConnectionEstablished { peer_id, num_established, endpoint, .. } => {
                if endpoint.is_relayed() {
                    self.stats.relayed_connections += 1;
                } else if endpoint.is_dialer() {
                    self.reservations.on_dialed(peer_id, endpoint.get_remote_address());
                }
                if num_established.get() == 1 {
                    self.connected.insert(peer_id);
                    self.redials.connected(&peer_id);
                    self.emit(NetworkEvent::PeerConnected(peer_id));
                }
                // The dial's own connection, or one the peer opened meanwhile: both serve.
                for (_, dial) in self.pending_dials.extract_if(|_, dial| dial.peer == peer_id) {
                    dial.answer(Ok(()));
                }
            }
            SwarmEvent::OutgoingConnectionError { connection_id, peer_id, error } => {
                let why = super::dial_error::describe(&error);
                if let Some(peer) = peer_id
                    && !self.swarm.is_connected(&peer)
                {
                    let now = Instant::now();
                    match self.redials.dial_failed(&peer, now) {
                        Redial::Unscheduled => {}
                        Redial::At(at) => tracing::debug!(
                            %peer,
                            "dial failed ({why}); dialling again in {:?}",
                            at - now
                        ),
                        Redial::GivenUp => tracing::debug!(
                            %peer,
                            "dial failed ({why}); no more dials until mDNS finds the peer again"
                        ),
                    }
                    self.emit(NetworkEvent::DialFailed { peer, error: why.clone() });
                }
                if let Some(dial) = self.pending_dials.remove(&connection_id) {
                    tracing::debug!(peer = %dial.peer, "dial failed: {why}");
                    dial.answer(Err(&why));
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                self.connected.remove(&peer_id);
                self.redials.disconnected(&peer_id, Instant::now());
                self.buckets.remove(&peer_id);
                self.misbehaviour.remove(&peer_id);
                let next = self.reservations.on_disconnected(peer_id);
                self.reserve(next);
                self.emit(NetworkEvent::PeerDisconnected(peer_id));
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    /// Dials the peers due for a dial (see [`Redials`]): found by mDNS just now, a bootstrap
    /// peer disconnected a moment ago, or a backoff after a failed dial that has passed.
    fn redial(&mut self) {
        let now = Instant::now();
        for (peer, addrs) in self.redials.due(now) {
            let opts = DialOpts::peer_id(peer)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .addresses(addrs)
                .build();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    tracing::debug!(%peer, "dialling");
                    self.stats.redials += 1;
                }
                // Connected, or another dial is under way, whose outcome counts instead.
                Err(DialError::DialPeerConditionFalse(_)) => {}
                Err(error) => {
                    let why = super::dial_error::describe(&error);
                    tracing::debug!(%peer, "cannot dial: {why}");
                    self.redials.dial_failed(&peer, now);
                }
            }
        }
    }

    /// Listens on each circuit address (asking its relay for a reservation).
    fn reserve(&mut self, circuits: Vec<(PeerId, Multiaddr)>) {
        for (relay, addr) in circuits {
            match self.swarm.listen_on(addr.clone()) {
                Ok(listener) => {
                    tracing::info!(%relay, "asking relay for a reservation");
                    self.reservations.on_listening(relay, listener);
                }
                Err(error) => tracing::warn!(%addr, %error, "cannot listen through relay"),
            }
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => self.on_gossip(propagation_source, &message_id, &message),
            BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed { peer_id, topic })
                if topic == self.topic.hash() =>
            {
                self.emit(NetworkEvent::Subscribed(peer_id));
            }
            BehaviourEvent::Registry(event) => self.on_registry(event),
            BehaviourEvent::Kad(event) => self.on_kad(event),
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                let now = Instant::now();
                for (peer, addr) in found {
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
                    let connected = self.swarm.is_connected(&peer);
                    let scheduled = self.redials.discovered(peer, addr.clone(), connected, now);
                    tracing::debug!(%peer, %addr, connected, scheduled, "mDNS found a peer");
                    if !scheduled && !connected {
                        // More mDNS peers than the schedule holds: one dial, no redials.
                        let _ = self.swarm.dial(addr.clone());
                    }
                    self.emit(NetworkEvent::PeerDiscovered { peer, addr });
                }
                self.redial();
            }
            BehaviourEvent::Mdns(mdns::Event::Expired(gone)) => {
                for (peer, addr) in gone {
                    self.redials.expired(&peer, &addr);
                }
            }
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                if info.protocols.contains(&super::protocol::KAD_PROTOCOL) {
                    for addr in info.listen_addrs.into_iter().take(self.limits.max_addrs) {
                        self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                    }
                }
                let relays = info.protocols.contains(&relay::HOP_PROTOCOL_NAME);
                let circuits = self.reservations.on_identified(peer_id, relays);
                self.reserve(circuits);
            }
            BehaviourEvent::Autonat(autonat::Event::StatusChanged { new, .. }) => {
                let reachability = match new {
                    autonat::NatStatus::Public(_) => Reachability::Public,
                    autonat::NatStatus::Private => Reachability::Private,
                    autonat::NatStatus::Unknown => Reachability::Unknown,
                };
                tracing::info!(?reachability, "AutoNAT: reachability changed");
                let (reserve, close) = self.reservations.on_reachability(reachability);
                self.reserve(reserve);
                for listener in close {
                    self.swarm.remove_listener(listener);
                }
            }
            BehaviourEvent::RelayClient(relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal: false,
                ..
            }) => {
                tracing::info!(relay = %relay_peer_id, "relay reservation accepted");
                self.stats.relay_reservations += 1;
            }
            BehaviourEvent::Dcutr(dcutr::Event { remote_peer_id, result }) => match result {
                Ok(_) => {
                    tracing::info!(peer = %remote_peer_id, "direct connection (hole punched)");
                    self.stats.hole_punches_succeeded += 1;
                }
                Err(error) => {
                    tracing::debug!(peer = %remote_peer_id, %error, "hole punching failed");
                    self.stats.hole_punches_failed += 1;
                }
            },
            _ => {}
        }
    }

    fn on_gossip(&mut self, via: PeerId, id: &gossipsub::MessageId, message: &gossipsub::Message) {
        let verdict = match message.source {
            Some(source) => {
                SignedAnnouncement::decode(&message.data, &self.limits).and_then(|ann| {
                    verify_announcement(&ann, Some(&source), &self.policy, &self.limits, unix_now())
                        .map(|()| (source, ann))
                })
            }
            None => Err(Error::InvalidMessage("anonymous gossip message".into())),
        };
        let acceptance = match verdict {
            Ok((source, announcement)) => {
                self.stats.announcements_accepted += 1;
                self.emit(NetworkEvent::Announcement { source, announcement });
                MessageAcceptance::Accept
            }
            Err(error) => {
                tracing::debug!(peer = %via, %error, "announcement rejected");
                match error {
                    Error::Decode(_)
                    | Error::TooLarge { .. }
                    | Error::Truncated { .. }
                    | Error::UnsupportedVersion(_) => self.stats.announcements_malformed += 1,
                    Error::SignerMismatch { .. }
                    | Error::PeerMismatch { .. }
                    | Error::DomainMismatch { .. }
                    | Error::MalformedSignature(_)
                    | Error::HighS
                    | Error::RecoveryFailed
                    | Error::InvalidRecoveryId(_) => {
                        self.stats.announcements_forged += 1;
                    }
                    _ => self.stats.announcements_invalid += 1,
                }
                self.penalize(via);
                MessageAcceptance::Reject
            }
        };
        self.swarm.behaviour_mut().gossipsub.report_message_validation_result(id, &via, acceptance);
    }

    fn on_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::OutboundQueryProgressed { id, result, step, .. } => {
                if self.dht.on_progress(id, result, step.last)
                    && let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&id)
                {
                    query.finish();
                }
            }
            kad::Event::InboundRequest {
                request: kad::InboundRequest::PutRecord { source, record: Some(record), .. },
            } => match dht::check_record(&record, &self.policy, &self.limits) {
                Ok(()) => {
                    let store = self.swarm.behaviour_mut().kad.store_mut();
                    if dht::rolls_back(&record, store.get(&record.key).as_deref(), &self.limits) {
                        tracing::debug!(peer = %source, "an older announcement than the one stored: kept the newer");
                    } else if let Err(error) = store.put(record) {
                        tracing::debug!(%error, "DHT store full");
                    }
                }
                Err(error) => {
                    tracing::debug!(peer = %source, %error, "DHT record refused");
                    self.stats.dht_records_refused += 1;
                    self.penalize(source);
                }
            },
            kad::Event::InboundRequest {
                request: kad::InboundRequest::AddProvider { record: Some(record) },
            } => {
                if let Err(error) = self.swarm.behaviour_mut().kad.store_mut().add_provider(record)
                {
                    tracing::debug!(%error, "DHT provider store full");
                }
            }
            _ => {}
        }
    }

    /// Counts a misbehaviour of `peer`; disconnects it at the limit.
    fn penalize(&mut self, peer: PeerId) {
        let count = self.misbehaviour.entry(peer).or_default();
        *count += 1;
        if *count >= MISBEHAVIOUR_LIMIT {
            tracing::warn!(%peer, "disconnecting misbehaving peer");
            self.stats.peers_disconnected += 1;
            self.misbehaviour.remove(&peer);
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    fn allow_query(&mut self, peer: PeerId) -> bool {
        let rate = self.queries_per_sec;
        let now = Instant::now();
        let bucket = self.buckets.entry(peer).or_insert(Bucket { tokens: 2.0 * rate, last: now });
        let refill = now.duration_since(bucket.last).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + refill).min(2.0 * rate);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn on_registry(&mut self, event: request_response::Event<RegistryRequest, RegistryResponse>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request, channel, .. } => {
                    if self.allow_query(peer) {
                        self.emit(NetworkEvent::RegistryQuery {
                            peer,
                            request,
                            responder: RegistryResponder(channel),
                        });
                    } else {
                        self.stats.registry_queries_refused += 1;
                        let refused = RegistryResponse::Refused { reason: "rate limited".into() };
                        self.send_registry_response(RegistryResponder(channel), refused);
                    }
                }
                request_response::Message::Response { request_id, response } => {
                    if let Some(reply) = self.pending_queries.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure { request_id, error, .. } => {
                if let Some(reply) = self.pending_queries.remove(&request_id) {
                    let _ = reply.send(Err(Error::RegistryQueryFailed(error)));
                }
            }
            request_response::Event::ResponseSent { .. }
            | request_response::Event::InboundFailure { .. } => {
                self.responses_in_flight = self.responses_in_flight.saturating_sub(1);
            }
        }
    }
}
