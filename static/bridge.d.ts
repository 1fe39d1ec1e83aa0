// Types for bridge.js, the browser client of bridged. See README.md, "Use it in your page".

/** A message as bridged stores it; `id` is its cursor. */
export interface Message {
  id: string;
  event: string;
  data: unknown;
  time?: string;
}

/** The rungs of the ladder, top first. */
export type Rung = 'ws' | 'sse' | 'longpoll' | 'poll';

/** Why the client last moved. Step-downs and step-ups are also reported to bridged. */
export type Reason =
  | 'start'
  | 'connect_failed' // the rung could not connect at all
  | 'repeated_failures' // it connected but failed failuresBeforeStepDown times within failureWindowMs
  | 'silent' // it said nothing for twice its heartbeat: a proxy buffers it
  | 'cut' // long-polls died early at an intermediary, below longPollMinMs
  | 'probe_delivered'; // a probe of the higher rung delivered a message or a heartbeat: stepped up

export interface State {
  rung: Rung | null; // null while a follower tab, or after close()
  probing: Rung | null; // the higher rung being probed in the background
  retries: number; // reconnects on this rung since it last delivered
  lastId: string; // the cursor: the id of the last message delivered ('' before any)
  reason: Reason; // of the last change
  change: 'down' | 'up' | null;
  since: number; // Date.now() of the last change
  heartbeatMs: number;
  longPollWaitMs: number; // the long-poll wait in use (shrinks after cuts, grows back)
  leader: boolean; // this tab runs the connection; false: another tab relays to it
  tokenFetches: number; // calls of the token function so far
}

/** What the app's socket function returns for one frame: a message, a keepalive, or nothing. */
export type MappedFrame = { id: string; event: string; data: unknown } | 'ping' | null | undefined;

export interface AppWebSocket {
  /** The socket's URL (ws:, wss:, or a path on the page's origin), or a function of the token. */
  url: string | ((token: string) => string | Promise<string>);
  /** Maps a parsed JSON frame; the id must be the one POST /v1/publish returned. Default: the frame itself. */
  map?: (frame: any) => MappedFrame;
  /** The socket's keepalive interval, for silence detection; 0: it sends none. Default: heartbeatMs. */
  heartbeatMs?: number;
}

export interface ConnectOptions {
  /** bridged's base URL; '' (default) for the page's own origin. */
  url?: string;
  /**
   * The subscriber token, or a function that fetches one (it may return {token, expires}). The
   * function is called again on a 401 and before the token expires.
   */
  token: string | (() => string | { token: string; expires?: string } | Promise<string | { token: string; expires?: string }>);
  /** The app's own WebSocket as the top rung; without it the top rung is bridged's /v1/ws; false: no WebSocket rung. */
  websocket?: AppWebSocket | false;
  /** Every message, exactly once, in order. */
  onMessage?: (m: Message) => void;
  /** Messages between `from` and `to` are gone (expired before this client read them): refetch state. */
  onReset?: (r: { from: string; to: string }) => void;
  onState?: (s: State) => void;
  /** Resume after this id (from an earlier page, say). Default: from the oldest message bridged keeps. */
  cursor?: string;
  /** Share one connection between the tabs of this origin: true (default; keyed by url and the token's sub), a key of your own, or false. */
  share?: boolean | string;
  /** Limit the ladder to these rungs (top first). */
  rungs?: Rung[];
  /** Report step-downs and step-ups to POST /v1/client-events (default true). */
  reportEvents?: boolean;
  /** Use POST /v1/ticket for SSE and WebSocket URLs when bridged has it (default true). */
  tickets?: boolean;
  heartbeatMs?: number; // assumed until bridged's hello says (15000)
  pollIntervalMs?: number; // 3000
  longPollWaitMs?: number; // 25000
  longPollMinMs?: number; // 10000: a long-poll cut shorter than this steps down to poll
  failuresBeforeStepDown?: number; // 3
  failureWindowMs?: number; // 60000
  probeMinMs?: number; // 5000: first probe of a higher rung, jittered
  probeMaxMs?: number; // 60000: probes back off, doubling, up to this
  reconnectMinMs?: number; // 500
  reconnectMaxMs?: number; // 10000
  requestTimeoutMs?: number; // 15000
}

export interface Connection {
  close(): void;
  readonly state: State;
}

export declare const RUNGS: readonly Rung[];
export declare function connect(options: ConnectOptions): Connection;
/** "<epoch base36>-<seq decimal>" into its parts, or null. */
export declare function parseId(id: string): { epoch: string; seq: bigint } | null;
/** How id stands to the last delivered id. */
export declare function relation(last: string, id: string): 'next' | 'dup' | 'gap' | 'foreign';
