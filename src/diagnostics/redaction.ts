/**
 * Redaction of what debug dumps show: commands can carry secrets (`mysql -pSECRET`,
 * `TOKEN=... deploy`, `curl -H 'Authorization: Bearer ...'`), and dumps are for reading
 * by whoever investigates. The default pattern hides the value after the usual words;
 * operators add their own patterns in the configuration.
 */

/** `password=VALUE`, `token: VALUE`, `--secret VALUE`, `Authorization: Bearer VALUE`, `-pVALUE`. */
export const DEFAULT_REDACT_PATTERNS: readonly string[] = [
  String.raw`(?:pass(?:word|wd)?|pwd|secret|token|api[-_]?key|access[-_]?key|private[-_]?key|credentials?)\s*[=:]\s*("[^"]*"|'[^']*'|\S+)`,
  String.raw`--(?:pass(?:word)?|secret|token|api[-_]?key)[= ]\s*("[^"]*"|'[^']*'|\S+)`,
  String.raw`(?:authorization|bearer)[:\s]+(?:bearer\s+|basic\s+)?("[^"]*"|'[^']*'|[^\s'"]+)`,
  String.raw`(?<=\s|^)-p(\S+)`,
];

/** The mark left where a value was hidden. */
export const REDACTED = '[redacted]';

/** Longest text a dump shows of one command. */
const MAX_SHOWN = 200;

/** A function that hides secrets in a command for display. */
export type Redactor = (text: string) => string;

/**
 * Builds a redactor from regular expressions (case-insensitive); each match's first group —
 * or the whole match when there is none — is replaced. Long text is shortened.
 */
export function createRedactor(patterns: readonly string[] = DEFAULT_REDACT_PATTERNS): Redactor {
  const compiled = patterns.map((p) => new RegExp(p, 'gi'));
  return (text) => {
    let out = text;
    for (const re of compiled) {
      out = out.replace(re, (match: string, group?: unknown) => {
        if (typeof group !== 'string' || group.length === 0) return REDACTED;
        const at = match.lastIndexOf(group);
        return `${match.slice(0, at)}${REDACTED}${match.slice(at + group.length)}`;
      });
    }
    return out.length > MAX_SHOWN ? `${out.slice(0, MAX_SHOWN)}… (${out.length} chars)` : out;
  };
}
