// Azora's additions to localstripe's fake Stripe.js (appended to it by the emulator, gap m):
// `createPaymentMethod` (localstripe's is empty) and `handleNextAction` (missing), with a 3-D
// Secure challenge drawn like a bank's. Dev and tests only.
(function () {
  'use strict';
  const base = LOCALSTRIPE_BASE_API;
  const localstripe = Stripe;

  function form(fields) {
    return Object.keys(fields)
      .filter((k) => fields[k] !== undefined && fields[k] !== null && fields[k] !== '')
      .map((k) => encodeURIComponent(k) + '=' + encodeURIComponent(fields[k]))
      .join('&');
  }

  async function call(path, fields, query) {
    // A form body is a "simple" request: no CORS preflight, which localstripe does not answer.
    const url = base + path + (query ? '?' + form(query) : '');
    const response = await fetch(url, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: form(fields),
    });
    const body = await response.json().catch(() => ({}));
    return { ok: response.ok && !body.error, body };
  }

  function cardError(message, code) {
    return { type: 'validation_error', code: code, message: message };
  }

  function challenge(amountText) {
    return new Promise((resolve) => {
      const overlay = document.createElement('div');
      overlay.id = 'azora-3ds-challenge';
      overlay.setAttribute('role', 'dialog');
      overlay.setAttribute('aria-modal', 'true');
      overlay.setAttribute('aria-labelledby', 'azora-3ds-title');
      Object.assign(overlay.style, {
        position: 'fixed', inset: '0', background: 'rgba(15, 20, 30, 0.55)', display: 'flex',
        alignItems: 'center', justifyContent: 'center', zIndex: '2147483647', padding: '16px',
      });
      const box = document.createElement('div');
      Object.assign(box.style, {
        background: '#fff', color: '#1b2230', borderRadius: '10px', maxWidth: '380px',
        width: '100%', padding: '22px', boxShadow: '0 10px 40px rgba(0,0,0,0.3)',
        font: '15px/1.5 system-ui, sans-serif',
      });
      const bank = document.createElement('p');
      bank.textContent = 'Test bank · 3-D Secure (Stripe emulator)';
      Object.assign(bank.style, { margin: '0 0 6px', color: '#5c6677', fontSize: '13px' });
      const title = document.createElement('h2');
      title.id = 'azora-3ds-title';
      title.textContent = 'Confirm this payment';
      Object.assign(title.style, { margin: '0 0 10px', fontSize: '19px' });
      const text = document.createElement('p');
      text.textContent = 'Your bank asks you to confirm a payment' +
        (amountText ? ' of ' + amountText : '') + '. In a real bank this is a code or an app.';
      Object.assign(text.style, { margin: '0 0 18px' });
      const buttons = document.createElement('div');
      Object.assign(buttons.style, { display: 'flex', gap: '10px', flexWrap: 'wrap' });
      const make = (id, label, primary) => {
        const b = document.createElement('button');
        b.type = 'button';
        b.id = id;
        b.textContent = label;
        Object.assign(b.style, {
          flex: '1 1 140px', padding: '11px 14px', borderRadius: '8px', font: 'inherit',
          fontWeight: '600', cursor: 'pointer', border: primary ? '0' : '1px solid #a8322b',
          background: primary ? '#1f7a50' : '#fff', color: primary ? '#fff' : '#a8322b',
        });
        return b;
      };
      const complete = make('azora-3ds-complete', 'Complete authentication', true);
      const fail = make('azora-3ds-fail', 'Fail authentication', false);
      buttons.append(complete, fail);
      box.append(bank, title, text, buttons);
      overlay.appendChild(box);
      document.body.appendChild(overlay);
      const done = (success) => {
        overlay.remove();
        resolve(success);
      };
      complete.addEventListener('click', () => done(true));
      fail.addEventListener('click', () => done(false));
      complete.focus();
    });
  }

  // localstripe's card fields are bare inputs named after its API fields: give them the labels
  // a customer expects (and stable names), keeping its behaviour.
  const FIELDS = {
    number: ['cardnumber', 'Card number', 'cc-number', 'numeric'],
    exp_month: ['exp-month', 'MM', 'cc-exp-month', 'numeric'],
    exp_year: ['exp-year', 'YY', 'cc-exp-year', 'numeric'],
    cvc: ['cvc', 'CVC', 'cc-csc', 'numeric'],
    postal_code: ['postal', 'Postal code', 'postal-code', 'text'],
  };
  const mount = Element.prototype.mount;
  Element.prototype.mount = function (domElement) {
    mount.call(this, domElement);
    if (!this._inputs) return;
    const label = this._domChildren[0];
    if (label) label.textContent = 'Test card · Stripe emulator';
    for (const [field, [name, placeholder, autocomplete, mode]] of Object.entries(FIELDS)) {
      const input = this._inputs[field];
      if (!input) continue;
      input.name = name;
      input.placeholder = placeholder;
      input.setAttribute('aria-label', placeholder);
      input.setAttribute('autocomplete', autocomplete);
      input.setAttribute('inputmode', mode);
    }
  };

  Stripe = function (apiKey, options) {
    const stripe = localstripe(apiKey, options);

    stripe.createPaymentMethod = async function (params) {
      const element = params && (params.card || params.element);
      const value = element && element.value && element.value.card;
      if (!value || !value.number) {
        return { error: cardError('Your card number is incomplete.', 'incomplete_number') };
      }
      if (!value.exp_month || !value.exp_year || value.exp_year.length < 4) {
        return { error: cardError("Your card's expiration date is incomplete.", 'incomplete_expiry') };
      }
      if (!value.cvc) {
        return { error: cardError("Your card's security code is incomplete.", 'incomplete_cvc') };
      }
      const answer = await call('/v1/payment_methods', {
        key: apiKey,
        type: 'card',
        'card[number]': value.number.replace(/\s+/g, ''),
        'card[exp_month]': value.exp_month,
        'card[exp_year]': value.exp_year,
        'card[cvc]': value.cvc,
        'billing_details[address][postal_code]': element.value.postal_code,
      });
      if (!answer.ok) {
        const error = answer.body.error || {};
        return { error: { type: 'card_error', code: error.code, message: error.message || 'Your card number is invalid.' } };
      }
      return { paymentMethod: answer.body };
    };

    // The confirmation the server made needs the customer: the bank's challenge, then the
    // emulator's `_authenticate` (success or failure), as Stripe.js does with the issuer.
    stripe.handleNextAction = async function (params) {
      const clientSecret = params && params.clientSecret;
      if (!clientSecret || clientSecret.indexOf('_secret_') < 0) {
        return { error: { type: 'invalid_request_error', message: 'A clientSecret is required.' } };
      }
      const pi = clientSecret.split('_secret_')[0];
      const success = await challenge(params.amountText || '');
      const answer = await call('/v1/payment_intents/' + pi + '/_authenticate',
        { key: apiKey, client_secret: clientSecret }, { success: success ? 'true' : 'false' });
      if (!answer.ok) return { error: answer.body.error || { message: 'Authentication failed.' } };
      if (!success) {
        return {
          error: {
            type: 'invalid_request_error',
            code: 'payment_intent_authentication_failure',
            message: 'We are unable to authenticate your payment method. Please choose a different payment method and try again.',
            payment_intent: answer.body,
          },
        };
      }
      return { paymentIntent: answer.body };
    };

    return stripe;
  };
})();
