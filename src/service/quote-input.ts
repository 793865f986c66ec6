/**
 * Quotes user input for a one-line message: JSON-style escapes (so a newline or a control
 * character cannot break the line) and long input shortened in the middle.
 */
export function quoteInput(text: string, max = 80): string {
  const shown = text.length > max ? `${text.slice(0, max - 20)}…${text.slice(-19)}` : text;
  return JSON.stringify(shown);
}
